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

 protected:
  ~CqTag() = default;
};

}  // namespace raftkv::service
