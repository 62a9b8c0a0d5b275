pragma circom 2.1.5;
include "../node_modules/circomlib/circuits/poseidon.circom";
include "../node_modules/circomlib/circuits/comparators.circom";
include "../node_modules/circomlib/circuits/bitify.circom";
include "merkle.circom";

// Private receipt attestation, version 1 (state/market/attest.py, zk/receipt.py).
//
// The chain appends a leaf for every paid job whose client asked for attestations:
//     leaf = Poseidon(Poseidon(kind, units), Poseidon(secret))
// where Poseidon(secret) is the owner commitment the client put in its job_submit, kind is the job
// kind's field id and units the receipt's metered units. This proves, without saying which leaf:
//   * the prover knows the secret of a leaf in the tree whose root is `root` (a root the chain had),
//   * that leaf's job is of kind `kind` and its receipt has `units >= minUnits` (both below 2^64),
//   * nullifier = Poseidon(scope, secret): one attestation per paid job per scope,
//   * `message` is bound to the proof (the on-chain rule puts the sender there).
template ReceiptAttestation(depth) {
    signal input secret;
    signal input units;
    signal input pathElements[depth];
    signal input pathIndices[depth];
    signal input kind;
    signal input minUnits;
    signal input scope;
    signal input message;
    signal output root;
    signal output nullifier;

    component unitsBits = Num2Bits(64);
    unitsBits.in <== units;
    component minBits = Num2Bits(64);
    minBits.in <== minUnits;
    component enough = GreaterEqThan(64);
    enough.in[0] <== units;
    enough.in[1] <== minUnits;
    enough.out === 1;

    component owner = Poseidon(1);
    owner.inputs[0] <== secret;
    component terms = Poseidon(2);
    terms.inputs[0] <== kind;
    terms.inputs[1] <== units;
    component leaf = Poseidon(2);
    leaf.inputs[0] <== terms.out;
    leaf.inputs[1] <== owner.out;

    component tree = MerkleRoot(depth);
    tree.leaf <== leaf.out;
    for (var i = 0; i < depth; i++) {
        tree.pathElements[i] <== pathElements[i];
        tree.pathIndices[i] <== pathIndices[i];
    }
    root <== tree.root;

    component nul = Poseidon(2);
    nul.inputs[0] <== scope;
    nul.inputs[1] <== secret;
    nullifier <== nul.out;

    signal messageSquared;
    messageSquared <== message * message;
}

component main {public [kind, minUnits, scope, message]} = ReceiptAttestation(20);
