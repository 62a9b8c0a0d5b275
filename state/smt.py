"""Compressed binary sparse Merkle tree: the incrementally-updated state commitment.

Shape (history independent: the root is a pure function of the key/value-hash set):

* Keys and value hashes are 32 bytes; keys are SHA-256 outputs, so they spread uniformly.
* Bit ``i`` of a key (MSB-first; bit 0 is the top bit of ``key[0]``) picks the child at depth ``i``
  (0 = left).
* A subtree holding exactly one key is a single *leaf* at the shallowest position where the key is
  alone ("leaf shortcut", as in Diem/Aptos JMT, but binary). Hence an internal node never has children
  (empty, empty), (leaf, empty) or (empty, leaf): those collapse upward. (internal, empty) is allowed.
* Hashes (SHA-256): empty = 32 zero bytes; leaf = ``H(0x00 || key || value_hash)``;
  internal = ``H(0x01 || left_hash || right_hash)``.

Storage: only the latest version, one record per non-empty *position*:

* db key = ``prefix + bytes([depth]) + path``, where ``path`` is the position's ``depth`` bits packed
  MSB-first into ``ceil(depth / 8)`` bytes (unused trailing bits zero). A leaf can sit at depth 256
  (two keys differing only in their last bit); its depth byte is ``256 & 0xFF = 0`` and it is told
  apart from the root (depth 0, no path bytes) by its 32 path bytes.
* value: leaf = ``b"L" + key + value_hash``; internal = ``b"I" + node_hash``; absent = empty.

The tree does no I/O except calling the ``get(db_key)`` callable it was given (a LevelDB snapshot's or
db's ``get``). :meth:`SparseMerkleTree.compute_update` returns the writes; the caller puts them in the
same atomic write batch as the block and then calls :meth:`SparseMerkleTree.apply`.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

EMPTY_HASH = bytes(32)
KEY_LEN = 32
KEY_BITS = 256
MAX_PROOF_SIBLINGS = KEY_BITS

_LEAF_TAG = b"L"
_INTERNAL_TAG = b"I"
_LEAF_PREFIX = b"\x00"
_INTERNAL_PREFIX = b"\x01"

# Decoded node forms, kept as plain bytes/tuples (no per-node objects) for speed:
#   None                               empty
#   bytes (32)                         internal node; the bytes are its hash
#   tuple (key, value_hash, hash)      leaf
_Node = bytes | tuple[bytes, bytes, bytes] | None

_MISSING: Any = object()
_sha256 = hashlib.sha256


def _node_hash(node: _Node) -> bytes:
    if node is None:
        return EMPTY_HASH
    if node.__class__ is bytes:
        return node  # type: ignore[return-value]
    return node[2]  # type: ignore[index]


def _decode_node(raw: bytes | None, db_key: bytes) -> _Node:
    if raw is None:
        return None
    raw = bytes(raw)
    if len(raw) == 65 and raw[0] == 0x4C:  # b"L"
        body = raw[1:]
        return (body[:32], body[32:], _sha256(_LEAF_PREFIX + body).digest())
    if len(raw) == 33 and raw[0] == 0x49:  # b"I"
        return raw[1:]
    raise ValueError(f"corrupt SMT node record at db key 0x{db_key.hex()}: {len(raw)} bytes, tag {raw[:1]!r}")


def leaf_hash(key: bytes, value_hash: bytes) -> bytes:
    """Hash of the leaf for ``key`` with ``value_hash``."""
    return _sha256(_LEAF_PREFIX + key + value_hash).digest()


def internal_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an internal node with child hashes ``left`` and ``right``."""
    return _sha256(_INTERNAL_PREFIX + left + right).digest()


@dataclass(frozen=True)
class TreeUpdate:
    """The result of :meth:`SparseMerkleTree.compute_update`.

    ``root`` is the new root hash; ``writes`` maps db keys to encoded nodes (``None`` = delete) and must
    be persisted atomically with the block before :meth:`SparseMerkleTree.apply` is called.
    The optional fields are filled in by ``compute_update`` and may be omitted by other callers:
    ``base_root`` is the root the update was computed against (``apply`` refuses an update whose base
    is not the tree's current root); ``nodes`` holds the decoded form of every write at depth
    <= ``nodes_depth`` (the computing tree's cache depth), so ``apply`` can refresh its cache without
    decoding anything.
    """

    root: bytes
    writes: dict[bytes, bytes | None]
    base_root: bytes | None = field(default=None, compare=False)
    nodes: dict[bytes, Any] | None = field(default=None, compare=False, repr=False)
    nodes_depth: int = field(default=-1, compare=False, repr=False)


def _hex32(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"SMT proof: {what} must be a 0x-prefixed hex string, got {type(value).__name__}")
    if not value.startswith("0x"):
        raise ValueError(f"SMT proof: {what} must start with '0x'")
    if len(value) != 2 + 2 * KEY_LEN:
        raise ValueError(
            f"SMT proof: {what} must be {KEY_LEN} bytes (64 hex digits), got {len(value) - 2} digits"
        )
    try:
        out = bytes.fromhex(value[2:])
    except ValueError:
        raise ValueError(f"SMT proof: {what} is not valid hex") from None
    if len(out) != KEY_LEN:
        raise ValueError(f"SMT proof: {what} is not valid hex")
    return out


_PROOF_FIELDS = frozenset({"siblings", "leaf_key", "leaf_value_hash"})


@dataclass(frozen=True)
class SmtProof:
    """A Merkle path for one key.

    ``siblings`` are the sibling hashes from depth 0 downward; the path ends at depth
    ``len(siblings)`` with the leaf (``leaf_key``, ``leaf_value_hash``), or with an empty position when
    both are ``None``. A leaf for a different key than the one asked about proves non-inclusion.
    """

    siblings: list[bytes]
    leaf_key: bytes | None
    leaf_value_hash: bytes | None

    def to_obj(self) -> dict:
        """JSON-friendly form: hashes as 0x-prefixed lowercase hex strings, ``None`` as null."""
        return {
            "siblings": ["0x" + s.hex() for s in self.siblings],
            "leaf_key": None if self.leaf_key is None else "0x" + self.leaf_key.hex(),
            "leaf_value_hash": None if self.leaf_value_hash is None else "0x" + self.leaf_value_hash.hex(),
        }

    @classmethod
    def from_obj(cls, obj: Any) -> SmtProof:
        """Parse :meth:`to_obj` output; raises ``ValueError`` naming the offending field."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"SMT proof must be an object, got {type(obj).__name__}")
        keys = set(obj.keys())
        missing = sorted(_PROOF_FIELDS - keys)
        if missing:
            raise ValueError(f"SMT proof: missing field(s) {missing}")
        extra = sorted(str(k) for k in keys - _PROOF_FIELDS)
        if extra:
            raise ValueError(f"SMT proof: unknown field(s) {extra}")
        sibs = obj["siblings"]
        if not isinstance(sibs, list):
            raise ValueError(f"SMT proof: siblings must be a list, got {type(sibs).__name__}")
        if len(sibs) > MAX_PROOF_SIBLINGS:
            raise ValueError(
                f"SMT proof: siblings has {len(sibs)} entries, at most {MAX_PROOF_SIBLINGS} allowed"
            )
        siblings = [_hex32(s, f"siblings[{i}]") for i, s in enumerate(sibs)]
        lk = obj["leaf_key"]
        lv = obj["leaf_value_hash"]
        if (lk is None) != (lv is None):
            raise ValueError("SMT proof: leaf_key and leaf_value_hash must be both null or both set")
        leaf_key = None if lk is None else _hex32(lk, "leaf_key")
        leaf_value_hash = None if lv is None else _hex32(lv, "leaf_value_hash")
        return cls(siblings=siblings, leaf_key=leaf_key, leaf_value_hash=leaf_value_hash)


def _is_hash(value: Any) -> bool:
    return isinstance(value, bytes) and len(value) == KEY_LEN


def verify_proof(root: bytes, key: bytes, value_hash: bytes | None, proof: SmtProof) -> bool:
    """Check an inclusion proof (``value_hash`` given) or a non-inclusion proof (``value_hash`` None).

    Never raises on malformed or forged input: returns ``False``. Non-canonical paths (a leaf or an
    empty position whose sibling is empty) are rejected as well, since the tree never contains them.
    """
    try:
        return _verify(root, key, value_hash, proof)
    except Exception:  # a bad proof must never raise
        return False


def _verify(root: bytes, key: bytes, value_hash: bytes | None, proof: SmtProof) -> bool:
    if not (_is_hash(root) and _is_hash(key)) or not isinstance(proof, SmtProof):
        return False
    if value_hash is not None and not _is_hash(value_hash):
        return False
    siblings = proof.siblings
    if not isinstance(siblings, (list, tuple)) or len(siblings) > MAX_PROOF_SIBLINGS:
        return False
    for s in siblings:
        if not _is_hash(s):
            return False
    lk, lv = proof.leaf_key, proof.leaf_value_hash
    if (lk is None) != (lv is None):
        return False
    n = len(siblings)
    ki = int.from_bytes(key, "big")
    if value_hash is not None:
        if lk != key or lv != value_hash:
            return False
        h = leaf_hash(key, value_hash)
    elif lk is None:
        h = EMPTY_HASH
    else:
        if not (_is_hash(lk) and _is_hash(lv)) or lk == key:
            return False
        # The leaf found must lie on the key's path: it shares the first n bits with the key.
        if (int.from_bytes(lk, "big") ^ ki) >> (KEY_BITS - n):
            return False
        h = leaf_hash(lk, lv)  # type: ignore[arg-type]
    if n and siblings[-1] == EMPTY_HASH:
        return False  # (leaf, empty) / (empty, empty) never occur: they collapse upward
    for d in range(n - 1, -1, -1):
        s = siblings[d]
        if (ki >> (KEY_BITS - 1 - d)) & 1:
            h = _sha256(_INTERNAL_PREFIX + s + h).digest()
        else:
            h = _sha256(_INTERNAL_PREFIX + h + s).digest()
    return h == root


class SparseMerkleTree:
    """A compressed binary SMT over a key/value store it reads through ``get``.

    The committed tree lives in the store; this object holds the decoded root and a cache of decoded
    nodes. The cache admits only the top levels of the tree (depth <= ``cache_depth``, the largest
    depth whose full binary tree fits in ``cache_size`` positions): those are the nodes every block
    touches, while deeper nodes are touched about once per block each and would only churn an LRU. The
    cache is therefore bounded by ``cache_size`` without any eviction bookkeeping.

    Only :meth:`apply` (and :meth:`clear_cache`) change the tree's state. Not thread-safe.
    """

    def __init__(
        self, get: Callable[[bytes], bytes | None], prefix: bytes = b"T", cache_size: int = 200_000
    ) -> None:
        if not isinstance(prefix, bytes):
            raise TypeError("prefix must be bytes")
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self._get = get
        self._prefix = prefix
        # Positions at depth <= D number 2**(D+1) - 1; cache the deepest D that fits (-1 = no cache).
        self._cache_depth = min((cache_size + 1).bit_length() - 2, KEY_BITS)
        self._cache: dict[bytes, _Node] = {}
        # prefix + depth byte, per depth 0..256 (depth 256 wraps to byte 0; the 32 path bytes disambiguate).
        self._dpfx = [prefix + bytes((d & 0xFF,)) for d in range(KEY_BITS + 1)]
        self._root_key = self._dpfx[0]
        self._root_node: _Node = _decode_node(get(self._root_key), self._root_key)

    # -- positions and node access ------------------------------------------------------------------

    def db_key(self, depth: int, path: int) -> bytes:
        """The db key of the position at ``depth`` whose path bits (top ``depth`` key bits) are ``path``."""
        return self._dpfx[depth] + (path << (-depth & 7)).to_bytes((depth + 7) >> 3, "big")

    def _load(self, depth: int, path: int) -> _Node:
        k = self.db_key(depth, path)
        if depth > self._cache_depth:
            return _decode_node(self._get(k), k)
        n = self._cache.get(k, _MISSING)
        if n is _MISSING:
            n = self._cache[k] = _decode_node(self._get(k), k)
        return n

    @property
    def root(self) -> bytes:
        """Root hash of the committed tree (``EMPTY_HASH`` when it holds no keys)."""
        return _node_hash(self._root_node)

    @property
    def prefix(self) -> bytes:
        """The db-key prefix of every node record."""
        return self._prefix

    @property
    def cache_depth(self) -> int:
        """Nodes at depth <= this are cached (-1: none)."""
        return self._cache_depth

    # -- updates -------------------------------------------------------------------------------------

    def compute_update(self, changes: Mapping[bytes, bytes | None]) -> TreeUpdate:
        """Batch update: key -> new value hash, or ``None`` to delete. Pure: does not change the tree.

        Only the paths of the changed keys are visited (plus one sibling read per level), so the cost
        grows with ``len(changes) * log2(number of keys)``, never with the total state size. Deleting an
        absent key, or setting a key to its current value hash, produces no writes for it. Keys and
        value hashes must be ``bytes`` of length 32 (``ValueError`` otherwise).

        Sequencing: once ``update.writes`` are persisted, call :meth:`apply` before computing the next
        update (the cache of top-level nodes must not lag behind the store).
        """
        for k, v in changes.items():
            if k.__class__ is not bytes or len(k) != KEY_LEN:
                raise ValueError(f"SMT key must be {KEY_LEN} bytes, got {k!r}")
            if v is not None and (v.__class__ is not bytes or len(v) != KEY_LEN):
                raise ValueError(
                    f"SMT value hash for key 0x{k.hex()} must be {KEY_LEN} bytes or None, got {v!r}"
                )
        items = sorted(changes.items())
        base = self.root
        if not items:
            return TreeUpdate(root=base, writes={}, base_root=base, nodes={}, nodes_depth=self._cache_depth)

        keys = [k for k, _ in items]
        vals = [v for _, v in items]
        kints = [int.from_bytes(k, "big") for k in keys]
        writes: dict[bytes, bytes | None] = {}
        nodes: dict[bytes, _Node] = {}  # decoded writes at cached depths, for apply()
        cdepth = self._cache_depth
        cache = self._cache
        cache_get = cache.get
        get = self._get
        dpfx = self._dpfx
        sha = _sha256
        E = EMPTY_HASH
        IP = _INTERNAL_PREFIX
        LP = _LEAF_PREFIX
        IT = _INTERNAL_TAG
        LT = _LEAF_TAG
        MISSING = _MISSING
        bisect = bisect_left
        decode = _decode_node

        def load(k: bytes, depth: int) -> _Node:
            if depth <= cdepth:
                n = cache_get(k, MISSING)
                if n is not MISSING:
                    return n
                n = cache[k] = decode(get(k), k)
                return n
            raw = get(k)
            if raw is None:
                return None
            if raw.__class__ is bytes and len(raw) == 33 and raw[0] == 0x49:
                return raw[1:]
            return decode(raw, k)

        def put(k: bytes, n: _Node, depth: int) -> None:
            if n is None:
                writes[k] = None
            elif n.__class__ is bytes:
                writes[k] = IT + n  # type: ignore[operator]
            else:
                writes[k] = LT + n[0] + n[1]  # type: ignore[index]
            if depth <= cdepth:
                nodes[k] = n

        def build(
            depth: int, bk: list[int], bkeys: list[bytes], bvals: list[bytes], lo: int, hi: int
        ) -> _Node:
            # Subtree at `depth` (on the path of bk[lo]) holding exactly items lo..hi-1 (sorted, >= 1);
            # positions below were empty. Writes every position strictly below; returns the node itself.
            if hi - lo == 1:
                key = bkeys[lo]
                vh = bvals[lo]
                return (key, vh, sha(LP + key + vh).digest())
            first = bk[lo]
            sd = KEY_BITS - (first ^ bk[hi - 1]).bit_length()  # first bit where the items differ (>= depth)
            cd = sd + 1
            lpath = (first >> (KEY_BITS - sd)) << 1
            rpath = lpath | 1
            mid = bisect(bk, rpath << (KEY_BITS - cd), lo, hi)
            nl = build(cd, bk, bkeys, bvals, lo, mid)
            nr = build(cd, bk, bkeys, bvals, mid, hi)
            put(dpfx[cd] + (lpath << (-cd & 7)).to_bytes((cd + 7) >> 3, "big"), nl, cd)
            put(dpfx[cd] + (rpath << (-cd & 7)).to_bytes((cd + 7) >> 3, "big"), nr, cd)
            h = sha(
                IP + (nl if nl.__class__ is bytes else nl[2]) + (nr if nr.__class__ is bytes else nr[2])  # type: ignore[index,operator]
            ).digest()
            # Chain of single-child internal nodes from depth sd up to depth+1.
            for d in range(sd, depth, -1):
                p = first >> (KEY_BITS - d)
                put(dpfx[d] + (p << (-d & 7)).to_bytes((d + 7) >> 3, "big"), h, d)
                h = sha(IP + E + h).digest() if p & 1 else sha(IP + h + E).digest()
            return h

        def rebuild(depth: int, old: _Node, lo: int, hi: int) -> _Node:
            # `old` is empty or a leaf: the new subtree is built from (old leaf U changes lo..hi-1).
            if hi - lo == 1:
                key = keys[lo]
                vh = vals[lo]
                if old is None:
                    return None if vh is None else (key, vh, sha(LP + key + vh).digest())
                if old[0] == key:  # type: ignore[index]
                    if vh is None:
                        return None
                    if vh == old[1]:  # type: ignore[index]
                        return old
                    return (key, vh, sha(LP + key + vh).digest())
                if vh is None:
                    return old  # deleting an absent key
            bk: list[int] = []
            bkeys: list[bytes] = []
            bvals: list[bytes] = []
            for i in range(lo, hi):
                v = vals[i]
                if v is not None:
                    bk.append(kints[i])
                    bkeys.append(keys[i])
                    bvals.append(v)
            if old is not None:
                ok = int.from_bytes(old[0], "big")  # type: ignore[index]
                i = bisect(kints, ok, lo, hi)
                if i == hi or kints[i] != ok:  # old leaf not overridden by a change
                    j = bisect(bk, ok)
                    bk.insert(j, ok)
                    bkeys.insert(j, old[0])  # type: ignore[index]
                    bvals.insert(j, old[1])  # type: ignore[index]
            n = len(bk)
            if n == 0:
                return None
            if n == 1 and old is not None and bkeys[0] == old[0] and bvals[0] == old[1]:  # type: ignore[index]
                return old
            return build(depth, bk, bkeys, bvals, 0, n)

        def upd1(depth: int, old: _Node, i: int) -> _Node:
            # upd() for a single change i, without recursion: walk down to the leaf/empty position on
            # the key's path (reading the siblings), rebuild there, then fold back up.
            ki = kints[i]
            stack = []
            node = old
            d = depth
            while node.__class__ is bytes:
                d += 1
                p = ki >> (KEY_BITS - d)
                pb = dpfx[d]
                sh = -d & 7
                nb = (d + 7) >> 3
                ck = pb + (p << sh).to_bytes(nb, "big")
                sk = pb + ((p ^ 1) << sh).to_bytes(nb, "big")
                if d <= cdepth:
                    node = cache_get(ck, MISSING)
                    if node is MISSING:
                        node = cache[ck] = decode(get(ck), ck)
                    sn = cache_get(sk, MISSING)
                    if sn is MISSING:
                        sn = cache[sk] = decode(get(sk), sk)
                else:  # below the cached levels: read directly, decoding internal nodes inline
                    raw = get(ck)
                    if raw is None:
                        node = None
                    elif raw.__class__ is bytes and len(raw) == 33 and raw[0] == 0x49:
                        node = raw[1:]
                    else:
                        node = decode(raw, ck)
                    raw = get(sk)
                    if raw is None:
                        sn = None
                    elif raw.__class__ is bytes and len(raw) == 33 and raw[0] == 0x49:
                        sn = raw[1:]
                    else:
                        sn = decode(raw, sk)
                stack.append((d, ck, node, sk, sn, p & 1))
            new = rebuild(d, node, i, i + 1)
            for d, ck, cn, sk, sn, b in reversed(stack):
                if new is None:
                    if sn is None or sn.__class__ is tuple:  # collapse (empty, empty) / (empty, leaf)
                        if cn is not None:
                            put(ck, None, d)
                        if sn is not None:
                            put(sk, None, d)
                        new = sn
                        continue
                    h = E
                    if cn is not None:
                        put(ck, None, d)
                elif new.__class__ is tuple:
                    if sn is None:  # collapse (leaf, empty)
                        if cn is not None:
                            put(ck, None, d)
                        continue
                    h = new[2]  # type: ignore[index]
                    if new != cn:
                        writes[ck] = LT + new[0] + new[1]  # type: ignore[index]
                        if d <= cdepth:
                            nodes[ck] = new
                else:
                    h = new
                    if new != cn:
                        writes[ck] = IT + new  # type: ignore[operator]
                        if d <= cdepth:
                            nodes[ck] = new
                if sn is None:
                    s = E
                elif sn.__class__ is bytes:
                    s = sn
                else:
                    s = sn[2]  # type: ignore[index]
                new = sha(IP + s + h).digest() if b else sha(IP + h + s).digest()  # type: ignore[operator]
            return new

        def upd(depth: int, path: int, old: _Node, lo: int, hi: int) -> _Node:
            # Returns the new node at (depth, path) for changes lo..hi-1 (>= 2) and writes every position
            # strictly below it; the caller writes the position itself. A leaf/empty result implies every
            # position below is empty in the new tree (the caller may then move the leaf upward).
            if old.__class__ is not bytes:
                return rebuild(depth, old, lo, hi)
            cd = depth + 1
            lpath = path << 1
            rpath = lpath | 1
            mid = bisect(kints, rpath << (KEY_BITS - cd), lo, hi)
            pb = dpfx[cd]
            sh = -cd & 7
            nb = (cd + 7) >> 3
            lk = pb + (lpath << sh).to_bytes(nb, "big")
            rk = pb + (rpath << sh).to_bytes(nb, "big")
            ol = load(lk, cd)
            orr = load(rk, cd)
            if mid == lo:
                nl = ol
            elif mid - lo == 1:
                nl = upd1(cd, ol, lo)
            else:
                nl = upd(cd, lpath, ol, lo, mid)
            if hi == mid:
                nr = orr
            elif hi - mid == 1:
                nr = upd1(cd, orr, mid)
            else:
                nr = upd(cd, rpath, orr, mid, hi)
            if nl is None:
                if nr is None or nr.__class__ is tuple:  # collapse: (empty, empty) or (empty, leaf)
                    if ol is not None:
                        put(lk, None, cd)
                    if orr is not None:
                        put(rk, None, cd)
                    return nr
                lh = E
            elif nl.__class__ is tuple:
                if nr is None:  # collapse: (leaf, empty)
                    if ol is not None:
                        put(lk, None, cd)
                    if orr is not None:
                        put(rk, None, cd)
                    return nl
                lh = nl[2]  # type: ignore[index]
            else:
                lh = nl
            if nr is None:
                rh = E
            elif nr.__class__ is bytes:
                rh = nr
            else:
                rh = nr[2]  # type: ignore[index]
            if nl != ol:
                put(lk, nl, cd)
            if nr != orr:
                put(rk, nr, cd)
            return sha(IP + lh + rh).digest()  # type: ignore[operator]

        old_root = self._root_node
        n_items = len(items)
        new_root = upd1(0, old_root, 0) if n_items == 1 else upd(0, 0, old_root, 0, n_items)
        if new_root != old_root:
            put(self._root_key, new_root, 0)
        return TreeUpdate(
            root=_node_hash(new_root), writes=writes, base_root=base, nodes=nodes, nodes_depth=cdepth
        )

    def apply(self, update: TreeUpdate) -> None:
        """Mark ``update`` as committed and refresh the cache and root.

        The caller must already have persisted ``update.writes`` (in the same atomic batch as the
        block), so that ``get`` returns them from now on. Raises ``ValueError`` if the update was
        computed against a different root than the current one, or its root does not match its writes.
        """
        if update.base_root is not None and update.base_root != self.root:
            raise ValueError(
                f"SMT update computed against root 0x{update.base_root.hex()}, tree is at 0x{self.root.hex()}"
            )
        writes = update.writes
        root_key = self._root_key
        nodes = update.nodes
        trusted = nodes is not None and update.nodes_depth == self._cache_depth
        if root_key not in writes:
            root_node = self._root_node
        elif trusted and root_key in nodes:  # type: ignore[operator]
            root_node = nodes[root_key]  # type: ignore[index]
        else:
            root_node = _decode_node(writes[root_key], root_key)
        if _node_hash(root_node) != update.root:
            raise ValueError("SMT update's root does not match its writes")
        self._root_node = root_node
        cache = self._cache
        if trusted:
            # `nodes` holds every write at the cached depths: refresh exactly those.
            cache.update(nodes)  # type: ignore[arg-type]
        else:
            # Foreign update: drop every written position from the cache; it is re-read on demand.
            pop = cache.pop
            for k in writes:
                pop(k, None)
        cache.pop(root_key, None)

    def clear_cache(self) -> None:
        """Drop every cached node and re-read the root (e.g. after the store changed behind the tree)."""
        self._cache.clear()
        self._root_node = _decode_node(self._get(self._root_key), self._root_key)

    # -- reads ---------------------------------------------------------------------------------------

    def _walk(self, key: bytes, siblings: list[bytes] | None) -> _Node:
        if key.__class__ is not bytes or len(key) != KEY_LEN:
            raise ValueError(f"SMT key must be {KEY_LEN} bytes, got {key!r}")
        ki = int.from_bytes(key, "big")
        node = self._root_node
        depth = 0
        while node.__class__ is bytes:
            if depth >= KEY_BITS:
                raise ValueError("corrupt SMT: internal node at depth 256")
            depth += 1
            path = ki >> (KEY_BITS - depth)
            if siblings is not None:
                siblings.append(_node_hash(self._load(depth, path ^ 1)))
            node = self._load(depth, path)
        return node

    def get_value_hash(self, key: bytes) -> bytes | None:
        """The value hash stored for ``key``, or ``None`` if the key is absent."""
        node = self._walk(key, None)
        if node is not None and node[0] == key:  # type: ignore[index]
            return node[1]  # type: ignore[index]
        return None

    def prove(self, key: bytes) -> SmtProof:
        """An inclusion proof for ``key`` if present, else a non-inclusion proof."""
        siblings: list[bytes] = []
        node = self._walk(key, siblings)
        if node is None:
            return SmtProof(siblings=siblings, leaf_key=None, leaf_value_hash=None)
        return SmtProof(siblings=siblings, leaf_key=node[0], leaf_value_hash=node[1])  # type: ignore[index]
