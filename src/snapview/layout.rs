//! Where each byte of a file lies: its pieces (chunks and holes) with their
//! offsets, so a read at any offset finds its first piece by binary search.

use crate::store::{Id, Piece};

#[derive(Debug)]
pub struct Layout {
    pieces: Vec<Piece>,
    /// `starts[i]` is the file offset of `pieces[i]`; one more entry at the
    /// end holds the total length.
    starts: Vec<u64>,
}

/// One stretch of a read: `len` bytes from offset `skip` into a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub index: usize,
    /// The piece's chunk, or `None` for a hole.
    pub id: Option<Id>,
    /// The piece's full length (a chunk must decode to exactly this).
    pub piece_len: u64,
    pub skip: u64,
    pub len: u64,
}

impl Layout {
    pub fn new(pieces: &[Piece]) -> Layout {
        let mut starts = Vec::with_capacity(pieces.len() + 1);
        let mut at = 0u64;
        starts.push(0);
        for p in pieces {
            at += p.len;
            starts.push(at);
        }
        Layout {
            pieces: pieces.to_vec(),
            starts,
        }
    }

    /// Bytes the pieces cover.
    pub fn len(&self) -> u64 {
        *self.starts.last().expect("starts is never empty")
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stretches of pieces that `[offset, offset + len)` covers (cut at
    /// the end of the pieces), in order.
    pub fn spans(&self, offset: u64, len: u64) -> impl Iterator<Item = Span> + '_ {
        let end = offset.saturating_add(len).min(self.len());
        // The piece holding `offset`: the last one starting at or before it.
        let first = self.starts.partition_point(|&s| s <= offset).max(1) - 1;
        (first..self.pieces.len())
            .map_while(move |i| {
                let (start, stop) = (self.starts[i], self.starts[i + 1]);
                if start >= end {
                    return None;
                }
                let from = offset.max(start);
                Some(Span {
                    index: i,
                    id: self.pieces[i].id,
                    piece_len: self.pieces[i].len,
                    skip: from - start,
                    len: stop.min(end) - from,
                })
            })
            .filter(|s| s.len > 0)
    }

    /// The first `n` chunks after piece `index` (holes skipped): what
    /// read-ahead loads for a reader that is about to get there.
    pub fn next_chunks(&self, index: usize, n: usize) -> impl Iterator<Item = Id> + '_ {
        self.pieces
            .iter()
            .skip(index + 1)
            .filter_map(|p| p.id)
            .take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        let c = |n: u8, len| Piece {
            id: Some(Id::of(&[n])),
            len,
        };
        Layout::new(&[c(0, 10), Piece { id: None, len: 5 }, c(1, 10), c(2, 1)])
    }

    #[test]
    fn spans_cover_exactly_the_range_asked() {
        let l = layout();
        assert_eq!(l.len(), 26);
        let s: Vec<_> = l.spans(8, 9).collect();
        let got: Vec<_> = s.iter().map(|s| (s.index, s.skip, s.len)).collect();
        assert_eq!(got, vec![(0, 8, 2), (1, 0, 5), (2, 0, 2)]);
        assert_eq!(s[1].id, None);
        // At a piece boundary, past the end, and clipped at the end.
        let got: Vec<_> = l.spans(15, 100).map(|s| (s.index, s.skip, s.len)).collect();
        assert_eq!(got, vec![(2, 0, 10), (3, 0, 1)]);
        assert_eq!(l.spans(26, 10).count(), 0);
        assert_eq!(l.spans(1000, 10).count(), 0);
        assert_eq!(l.spans(0, 0).count(), 0);
        // Every single byte maps to one span of length 1 at the right place.
        for off in 0..26 {
            let s: Vec<_> = l.spans(off, 1).collect();
            assert_eq!(s.len(), 1, "offset {off}");
            assert_eq!(l.starts[s[0].index] + s[0].skip, off);
        }
    }

    #[test]
    fn read_ahead_skips_holes_and_stops_at_the_end() {
        let l = layout();
        let next: Vec<_> = l.next_chunks(0, 2).collect();
        assert_eq!(next, vec![Id::of(&[1]), Id::of(&[2])]);
        assert_eq!(l.next_chunks(3, 2).count(), 0);
        assert!(Layout::new(&[]).is_empty());
        assert_eq!(Layout::new(&[]).spans(0, 10).count(), 0);
    }
}
