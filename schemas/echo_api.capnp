# Echo tutorial service: plain calls, callbacks and capability passing.

@0xe38c22568f89a420;

# Capability the server calls back into.
interface Callback { log @0 (msg :Text) -> (); }

# The echo service.
interface Echo {
  ping         @0 (msg :Text) -> (reply :Text);  # returns msg
  heartbeat    @1 (msg :Text, callback :Callback) -> ();  # calls callback.log(msg)
  getLogger    @2 () -> (callback :Callback);  # returns the server's logger
  createLogger @3 (label :Text) -> (callback :Callback);  # new labelled logger
}

# Saved form of a logger capability.
struct SavedLogger { label @0 :Text; }

# Saved form of any capability the echo server hands out.
struct SavedService { logger @0 :SavedLogger; }
