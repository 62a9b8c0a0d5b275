pragma circom 2.1.5;
include "../node_modules/circomlib/circuits/poseidon.circom";
include "../node_modules/circomlib/circuits/comparators.circom";
include "../node_modules/circomlib/circuits/bitify.circom";
include "merkle.circom";

// Anonymous bonded bid, version 1 (state/market/anon.py, zk/anon_bid.py).
//
// The chain keeps a tree of the miners that registered an identity commitment Poseidon(idSecret):
//     leaf = Poseidon(Poseidon(Poseidon(idSecret), addr),
//                     Poseidon(Poseidon(bond, memory), Poseidon(kinds, backend)))
// with the miner's current bond, advertised memory, the job kinds it runs (a bit mask) and its backend
// (a field id), re-written when they change and zeroed when the miner cannot take jobs. This proves,
// without saying which leaf:
//   * the bidder knows idSecret of a leaf under `root` (a recent root of the chain's tree),
//   * that miner's bond >= minBond and memory >= minMemory (all below 2^64),
//   * it runs every kind in requiredKinds (kinds has each bit requiredKinds has; 64-bit masks) and, when
//     requiredBackend is not 0, its backend is requiredBackend,
//   * nullifier = Poseidon(scope, idSecret): one bid per miner per job (scope is the job's),
//   * claim = Poseidon(addr, blind): the winner opens it (reveals blind) from its own account,
//   * `message` (the bid's terms: job and price) is bound to the proof.
template AnonBid(depth) {
    signal input idSecret;
    signal input addr;
    signal input bond;
    signal input memory;
    signal input kinds;
    signal input backend;
    signal input blind;
    signal input pathElements[depth];
    signal input pathIndices[depth];
    signal input scope;
    signal input minBond;
    signal input minMemory;
    signal input requiredKinds;
    signal input requiredBackend;
    signal input message;
    signal output root;
    signal output nullifier;
    signal output claim;

    component bits[4];
    for (var i = 0; i < 4; i++) {
        bits[i] = Num2Bits(64);
    }
    bits[0].in <== bond;
    bits[1].in <== minBond;
    bits[2].in <== memory;
    bits[3].in <== minMemory;
    component bondOk = GreaterEqThan(64);
    bondOk.in[0] <== bond;
    bondOk.in[1] <== minBond;
    bondOk.out === 1;
    component memoryOk = GreaterEqThan(64);
    memoryOk.in[0] <== memory;
    memoryOk.in[1] <== minMemory;
    memoryOk.out === 1;

    component kindBits = Num2Bits(64);
    kindBits.in <== kinds;
    component requiredBits = Num2Bits(64);
    requiredBits.in <== requiredKinds;
    for (var i = 0; i < 64; i++) {
        requiredBits.out[i] * (1 - kindBits.out[i]) === 0;
    }
    requiredBackend * (backend - requiredBackend) === 0;

    component idc = Poseidon(1);
    idc.inputs[0] <== idSecret;
    component who = Poseidon(2);
    who.inputs[0] <== idc.out;
    who.inputs[1] <== addr;
    component size = Poseidon(2);
    size.inputs[0] <== bond;
    size.inputs[1] <== memory;
    component caps = Poseidon(2);
    caps.inputs[0] <== kinds;
    caps.inputs[1] <== backend;
    component what = Poseidon(2);
    what.inputs[0] <== size.out;
    what.inputs[1] <== caps.out;
    component leaf = Poseidon(2);
    leaf.inputs[0] <== who.out;
    leaf.inputs[1] <== what.out;

    component tree = MerkleRoot(depth);
    tree.leaf <== leaf.out;
    for (var i = 0; i < depth; i++) {
        tree.pathElements[i] <== pathElements[i];
        tree.pathIndices[i] <== pathIndices[i];
    }
    root <== tree.root;

    component nul = Poseidon(2);
    nul.inputs[0] <== scope;
    nul.inputs[1] <== idSecret;
    nullifier <== nul.out;

    component cl = Poseidon(2);
    cl.inputs[0] <== addr;
    cl.inputs[1] <== blind;
    claim <== cl.out;

    signal messageSquared;
    messageSquared <== message * message;
}

component main {public [scope, minBond, minMemory, requiredKinds, requiredBackend, message]} = AnonBid(20);
