// CqTag: a gRPC completion-queue tag that handles its own completion.
//
// Whoever polls a completion queue (the Raft thread for the peer queue) casts
// each tag back to CqTag and calls OnComplete with the operation's `ok`. An
// object must stay alive until every operation it started has come back.
#pragma once

namespace raftkv::service {

class CqTag {
 public:
  virtual void OnComplete(bool ok) = 0;
  // True when completing this tag only moves outbound data along (it never
  // hands a message to the Raft core), so the Raft thread may complete it
  // while a Ready is being handled, before a synced write blocks it.
  virtual bool OnlySends() const { return false; }

 protected:
  ~CqTag() = default;
};

}  // namespace raftkv::service
