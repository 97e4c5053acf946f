//! [`Slots`]: a table whose ids we choose, small and reused lowest
//! first, as the protocol asks of question and export ids.

/// Table of entries with small reusable ids (lowest free first).
pub(super) struct Slots<T> {
    pub(super) items: Vec<Option<T>>,
    /// Free ids, lowest first.
    pub(super) free: std::collections::BinaryHeap<std::cmp::Reverse<u32>>,
    pub(super) len: usize,
}

impl<T> Slots<T> {
    pub(super) fn new() -> Self {
        Slots {
            items: Vec::new(),
            free: std::collections::BinaryHeap::new(),
            len: 0,
        }
    }
    pub(super) fn insert(&mut self, t: T) -> u32 {
        self.len += 1;
        match self.free.pop() {
            Some(std::cmp::Reverse(id)) => {
                if let Some(slot) = self.items.get_mut(id as usize) {
                    *slot = Some(t);
                }
                id
            }
            None => {
                self.items.push(Some(t));
                (self.items.len() - 1) as u32
            }
        }
    }
    pub(super) fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.items.get_mut(id as usize).and_then(Option::as_mut)
    }
    pub(super) fn get(&self, id: u32) -> Option<&T> {
        self.items.get(id as usize).and_then(Option::as_ref)
    }
    pub(super) fn remove(&mut self, id: u32) -> Option<T> {
        let t = self.items.get_mut(id as usize)?.take()?;
        self.len -= 1;
        self.free.push(std::cmp::Reverse(id));
        Some(t)
    }
    pub(super) fn len(&self) -> usize {
        self.len
    }
    pub(super) fn drain(&mut self) -> Vec<T> {
        self.free.clear();
        self.len = 0;
        self.items.drain(..).flatten().collect()
    }
}
