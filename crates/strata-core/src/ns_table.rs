//! A read-mostly map from namespace name to per-namespace state.
//!
//! Reads are one `ArcSwap` load and a hash lookup, with no lock, because every cache operation
//! does one. Writes (creating a namespace, rare and bounded by `MAX_NAMESPACES`) copy the map
//! under a mutex.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use parking_lot::Mutex;

pub(crate) type Table<V> = HashMap<Box<str>, Arc<V>>;

pub(crate) struct NsTable<V> {
    map: ArcSwap<Table<V>>,
    create_lock: Mutex<()>,
}

impl<V> Default for NsTable<V> {
    fn default() -> Self {
        Self {
            map: ArcSwap::from_pointee(HashMap::new()),
            create_lock: Mutex::new(()),
        }
    }
}

impl<V> NsTable<V> {
    /// A guard over the current map, for lock-free lookups on the hot path.
    #[inline]
    pub(crate) fn load(&self) -> Guard<Arc<Table<V>>> {
        self.map.load()
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<V>> {
        self.map.load().get(name).cloned()
    }

    pub(crate) fn snapshot(&self) -> Arc<Table<V>> {
        self.map.load_full()
    }

    /// The entry for `name`, created by `make(number_of_existing_entries)` if absent.
    pub(crate) fn get_or_create<E>(
        &self,
        name: &str,
        make: impl FnOnce(usize) -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        if let Some(v) = self.get(name) {
            return Ok(v);
        }
        let _guard = self.create_lock.lock();
        let table = self.map.load_full();
        if let Some(v) = table.get(name) {
            return Ok(v.clone());
        }
        let v = Arc::new(make(table.len())?);
        let mut next: Table<V> = (*table).clone();
        next.insert(name.into(), v.clone());
        self.map.store(Arc::new(next));
        Ok(v)
    }
}
