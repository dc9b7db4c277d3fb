//! `NodeSupervisor`: starts one actor per configured layer, restarts a failed one after an
//! exponential backoff with jitter, and escalates when a child fails more than
//! `max_restarts` times within `restart_window_ms`.
//!
//! ractor reports a child's panic or error to its supervisor but restarts nothing itself;
//! this is the restart policy. Escalation marks the child `Failed` and records why in
//! [`NodeStatus`]; the node then reports itself unhealthy. The data path keeps serving in every
//! case, because it never goes through an actor.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use strata_core::Layer;
use strata_core::rng::Rng;

use super::tier_actor::{TierActor, TierActorArgs, TierMsg};
use crate::config::SupervisorConfig;
use crate::status::{ActorState, NodeStatus};

/// Messages of the supervisor.
#[derive(Debug)]
pub(crate) enum SupervisorMsg {
    /// Start child `index` again (sent to itself after the backoff).
    Restart(usize),
    /// Make the actor of `layer` panic (chaos testing).
    InjectFault(Layer),
}

pub(crate) struct SupervisorArgs {
    pub(crate) children: Vec<TierActorArgs>,
    pub(crate) policy: SupervisorConfig,
    pub(crate) rng: Box<dyn Rng>,
    pub(crate) status: Arc<NodeStatus>,
}

struct Child {
    args: TierActorArgs,
    actor: Option<ActorRef<TierMsg>>,
    /// Start times of the restarts inside the current window.
    restarts: VecDeque<Instant>,
    given_up: bool,
}

pub(crate) struct SupervisorState {
    children: Vec<Child>,
    policy: SupervisorConfig,
    rng: Box<dyn Rng>,
    status: Arc<NodeStatus>,
}

pub(crate) struct NodeSupervisor;

async fn start_child(
    args: &TierActorArgs,
    supervisor: ActorCell,
) -> Result<ActorRef<TierMsg>, ActorProcessingErr> {
    // No name: ractor's registry is process-global, and several nodes may share a process.
    let (actor, _join) = Actor::spawn_linked(None, TierActor, args.clone(), supervisor).await?;
    Ok(actor)
}

impl SupervisorState {
    fn child_of(&self, cell: &ActorCell) -> Option<usize> {
        let id = cell.get_id();
        self.children
            .iter()
            .position(|c| c.actor.as_ref().is_some_and(|a| a.get_id() == id))
    }

    /// The backoff before the `n`th restart in the window (n ≥ 1): initial × 2^(n-1), capped,
    /// plus up to 50 % jitter so that several failing nodes do not restart in lockstep.
    fn backoff(&mut self, n: usize) -> Duration {
        let p = &self.policy;
        let exp = p
            .backoff_initial_ms
            .saturating_mul(1u64 << (n.saturating_sub(1)).min(20))
            .min(p.backoff_max_ms);
        Duration::from_millis(exp + self.rng.below(exp / 2 + 1))
    }

    /// Handles a failed (or unexpectedly stopped) child: schedule a restart or escalate.
    fn on_child_down(&mut self, myself: &ActorRef<SupervisorMsg>, index: usize, why: String) {
        let now = Instant::now();
        let window = Duration::from_millis(self.policy.restart_window_ms);
        let max = self.policy.max_restarts as usize;
        let child = &mut self.children[index];
        child.actor = None;
        while child
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            child.restarts.pop_front();
        }
        let layer = child.args.layer;
        if child.restarts.len() >= max {
            child.given_up = true;
            let msg = format!(
                "{layer} actor failed {} times within {} ms (budget {max}); last error: {why}",
                child.restarts.len() + 1,
                self.policy.restart_window_ms
            );
            tracing::error!(%layer, "{msg}; supervisor escalates");
            self.status.set_actor(layer, ActorState::Failed(why));
            self.status.escalate(msg);
            return;
        }
        child.restarts.push_back(now);
        let attempt = child.restarts.len();
        let delay = self.backoff(attempt);
        tracing::warn!(%layer, attempt, delay_ms = delay.as_millis() as u64, error = %why, "layer actor failed; restarting");
        self.status.set_actor(
            layer,
            ActorState::Restarting {
                attempt: attempt as u32,
            },
        );
        myself.send_after(delay, move || SupervisorMsg::Restart(index));
    }
}

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut children = Vec::with_capacity(args.children.len());
        for child in args.children {
            let actor = start_child(&child, myself.get_cell()).await?;
            children.push(Child {
                args: child,
                actor: Some(actor),
                restarts: VecDeque::new(),
                given_up: false,
            });
        }
        Ok(SupervisorState {
            children,
            policy: args.policy,
            rng: args.rng,
            status: args.status,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(index) => {
                let Some(child) = state.children.get(index) else {
                    return Ok(());
                };
                if child.actor.is_some() || child.given_up {
                    return Ok(());
                }
                match start_child(&child.args, myself.get_cell()).await {
                    Ok(actor) => {
                        state.children[index].actor = Some(actor);
                        state.status.record_restart();
                        tracing::info!(layer = %state.children[index].args.layer, "layer actor restarted");
                    }
                    Err(err) => {
                        state.on_child_down(&myself, index, format!("restart failed: {err}"))
                    }
                }
            }
            SupervisorMsg::InjectFault(layer) => {
                if let Some(actor) = state
                    .children
                    .iter()
                    .find(|c| c.args.layer == layer)
                    .and_then(|c| c.actor.as_ref())
                {
                    let _ = actor.cast(TierMsg::InjectPanic);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(i) = state.child_of(&cell) {
                    state.on_child_down(&myself, i, err.to_string());
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // Children stop only when the supervisor stops them; anything else is a fault.
                if let Some(i) = state.child_of(&cell) {
                    let why = reason.unwrap_or_else(|| "stopped unexpectedly".into());
                    state.on_child_down(&myself, i, why);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        for child in &mut state.children {
            if let Some(actor) = child.actor.take() {
                // Forget the child first so its termination event is not taken for a fault.
                let _ = actor
                    .stop_and_wait(Some("node shutdown".into()), Some(Duration::from_secs(5)))
                    .await;
            }
            state
                .status
                .set_actor(child.args.layer, ActorState::Stopped);
        }
        Ok(())
    }
}
