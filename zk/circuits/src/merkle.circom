pragma circom 2.1.5;
include "../node_modules/circomlib/circuits/poseidon.circom";

// Root of a binary Merkle tree with Poseidon(2) nodes (zk/poseidon_tree.py builds the same tree).
// pathIndices[i] = 1 when the node on the path at level i is a right child.
template MerkleRoot(depth) {
    signal input leaf;
    signal input pathElements[depth];
    signal input pathIndices[depth];
    signal output root;
    signal cur[depth + 1];
    signal left[depth];
    component h[depth];
    cur[0] <== leaf;
    for (var i = 0; i < depth; i++) {
        pathIndices[i] * (1 - pathIndices[i]) === 0;
        left[i] <== cur[i] + pathIndices[i] * (pathElements[i] - cur[i]);
        h[i] = Poseidon(2);
        h[i].inputs[0] <== left[i];
        h[i].inputs[1] <== cur[i] + pathElements[i] - left[i];
        cur[i + 1] <== h[i].out;
    }
    root <== cur[depth];
}
