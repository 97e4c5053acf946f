//! Limits on what a peer may make us read.

use capnp::message::ReaderOptions;

/// Limits applied to every incoming message. The defaults are those of the
/// C++ implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Words a reader may traverse in one message (8 Mi words = 64 MiB).
    pub traversal_limit_words: usize,
    /// How deeply structs and lists may nest.
    pub nesting_limit: i32,
    /// A frame must have fewer segments than this.
    pub max_segments: usize,
    /// The largest frame body accepted, in words.
    pub max_frame_words: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            traversal_limit_words: 8 * 1024 * 1024,
            nesting_limit: 64,
            max_segments: 512,
            max_frame_words: 8 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The capnp reader options these limits imply.
    pub fn reader_options(&self) -> ReaderOptions {
        let mut o = ReaderOptions::new();
        o.traversal_limit_in_words(Some(self.traversal_limit_words))
            .nesting_limit(self.nesting_limit);
        o
    }
}
