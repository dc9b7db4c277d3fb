import json
from ctl import BASE
from slots import keyslot
R = json.load(open(f"{BASE}/rings.json"))
def owners(ring, key):
    s = keyslot(key)
    for a, b, o in R[ring]:
        if a <= s <= b:
            return tuple(o)
