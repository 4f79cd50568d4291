// Package fleet lets several Detour nodes behind one load balancer answer
// the CA together through one etcd cluster: membership, and the http-01
// (RFC 8555 §8.3) and tls-alpn-01 (RFC 8737) answers every node presents.
//
// The CA's validation request for http-01 or tls-alpn-01 lands on whichever
// node the balancer picks, so the node that orders a certificate (the
// orderer) cannot answer alone: every node must present the same answer
// (and, when the path has a firewall window, open its own window). Every
// node builds the same validation paths from the same configuration, by
// name; the orderer mirrors Present and CleanUp to the other nodes:
//
//  1. Present on the orderer (Node.Mirror) runs its own path's Present,
//     reads the live members, publishes the challenge in etcd under a lease
//     of its own, and returns once every member live at that moment other
//     than itself has acknowledged it. A member that acknowledges with an
//     error fails Present with that node's name and error; one that does
//     not answer within MirrorOptions.AckTimeout fails it with its name; a
//     member that leaves the fleet meanwhile is not waited for. A node that
//     joins after Present read the members does not hold this renewal up
//     (it still presents the answer once its follower sees it).
//  2. Every node runs a follower (Node.Follow). For each answer another
//     node published it calls its own path of the same name (webroot writes
//     into this node's document root, standalone and side-port serve it, a
//     firewall-window wrapper opens this node's window) and writes an
//     acknowledgement, ok or the error, under its membership lease.
//  3. CleanUp on the orderer deletes the answer and the acknowledgements,
//     then runs its own path's CleanUp. Followers clean up when they see
//     the answer deleted. If the orderer dies, its answer's lease expires
//     within the TTL, the key vanishes, and the followers clean up just the
//     same.
//
// Answers for other challenge types need no mirroring: a DNS record is seen
// by the CA whichever node set it, so Mirror returns such a path unchanged.
//
// # Keys
//
// Everything lives under <prefix>/fleet/ (other parts of Detour use other
// names under the same prefix, e.g. <prefix>/store/):
//
//	<prefix>/fleet/nodes/<node>        Member JSON, under the node's lease
//	<prefix>/fleet/answers/<id>        {path, orderer, challenge}, under a lease the orderer holds for this answer
//	<prefix>/fleet/acks/<id>/<node>    {ok, error}, under the acknowledging node's lease
//
// <id> is derived from the orderer, the path, the challenge type, the
// identifier and the token (see answerID), so it is unique per challenge
// and the same for Present and CleanUp of one challenge, even in a new
// process. A node name is a DNS label; a second live process with the same
// name is refused (ErrNameTaken).
//
// # Failures
//
// A node whose etcd is unreachable for longer than the TTL loses its
// membership (and with it its acknowledgements); it logs that, keeps
// serving what it presented, and joins again once etcd is back, then
// acknowledges again the answers still published. Each follower keeps, in
// memory, the answers it presented (Presented): answers still published
// when it starts again are not presented twice, answers deleted while it
// was away are cleaned up. That memory does not survive the process: after
// a restart, a token a follower had written to disk and that was deleted
// meanwhile stays there (a stale file, harmless, but not removed by this
// package).
//
// # Trust
//
// Anyone who can write under <prefix>/fleet/answers/ makes every node
// present an answer of their choosing on the paths configured there. The
// follower accepts only http-01 and tls-alpn-01 answers with a valid
// identifier and base64url token, on paths of that type; etcd's own
// authentication (client certificates) is what keeps others out.
package fleet
