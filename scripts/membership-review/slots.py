def crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc

def keyslot(key: str) -> int:
    k = key.encode()
    s = k.find(b"{")
    if s >= 0:
        e = k.find(b"}", s + 1)
        if e > s + 1:
            k = k[s + 1:e]
    return crc16(k) % 16384

def owners_of(slots_reply, slot):
    """CLUSTER SLOTS reply -> list of ports (primary first) covering slot"""
    for ent in slots_reply:
        if ent[0] <= slot <= ent[1]:
            return [n[1] for n in ent[2:]]
    return None
