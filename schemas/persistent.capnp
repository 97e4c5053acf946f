# Persistent (savable) capabilities (capnp-actix copy).
#
# Wire-compatible with the upstream `capnp/persistent.capnp`. Written
# independently for this project; language-specific annotations are omitted.
# The annotation is renamed to `persistentAnnotation` (upstream: `persistent`)
# so it does not clash with the `persistent` Rust module of the interface; its
# id is pinned to the upstream value.

@0xb8630836983feed7;

# A capability that can be saved as a SturdyRef and restored later.
interface Persistent @0xc8cb212fcd9f5691 (SturdyRef, Owner) {
  save @0 SaveParams -> SaveResults;  # obtain a SturdyRef for this capability

  # Arguments of save.
  struct SaveParams {
    sealFor @0 :Owner;  # who may restore the ref
  }

  # Result of save.
  struct SaveResults {
    sturdyRef @0 :SturdyRef;  # the saved reference
  }
}

# Marks an interface or capability field as persistent.
annotation persistentAnnotation @0xf622595091cafb67 (interface, field) :Void;
