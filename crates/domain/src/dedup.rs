//! Exact, bounded duplicate detection: which order ids a book has already placed.
//!
//! Senders retry until a book confirms (at-least-once delivery), so a book must recognise an
//! order it has placed before, however late the re-send comes. Remembering every id would grow
//! without bound; remembering the last N ids (a window) would forget an id just before a slow
//! re-send arrives. This module does neither.
//!
//! # The scheme: streams, high-water marks and open gaps
//! An order id is read as a *stream* and a *sequence number* ([`OrderId::stream`],
//! [`OrderId::seq`]). A desk draws one random stream per book it trades in, each time it starts,
//! and numbers that stream's orders 0, 1, 2, ... in the order it first sends them
//! ([`OrderStream`](crate::OrderStream)). A book therefore sees, per stream, numbers that mostly
//! rise by one, with a few *gaps*: numbers still in flight, or lost with a node and not yet
//! re-sent.
//!
//! For each stream the book keeps the highest number placed (its high-water mark) and the open
//! gaps below it, as ranges. A number above the mark or inside a gap is new; any other number
//! was placed before. That is exact: a re-send after any delay is recognised, and an order is
//! never refused as a duplicate it is not. Its state is O(streams), not O(orders): a stream whose
//! orders all arrived is two numbers.
//!
//! # The bound, and the one refusal it costs
//! A desk keeps one batch per book in flight, so a lost batch opens one gap (a range), and it
//! re-sends in number order, so the gaps a re-send fills do not split into many: gaps stay few. A stream holds at most [`MAX_OPEN_GAPS`]; a sender that opens more (one that
//! skips numbers on purpose) closes the lowest gap, and the stream's *floor* rises above it. The
//! book can no longer tell whether a number below the floor was placed, so it answers
//! [`Placed::Unknowable`] for it, and the book refuses such an order with an error rather
//! than risk placing it twice. A well-behaved desk never meets this.
//!
//! # Snapshots and replay
//! [`PlacedOrders::marks`] lists each stream's mark, floor and gaps ([`StreamMarks`]), which
//! [`PlacedOrders::from_marks`] restores, checking them. Replaying `OrderPlaced` events through
//! [`PlacedOrders::record`] rebuilds the same state, gap closures included, because the state
//! depends only on the order in which ids were placed.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::order::OrderId;

/// Most open gaps a stream keeps; opening one more closes the lowest (see the module docs).
pub const MAX_OPEN_GAPS: usize = 1024;

/// Whether an order id was placed before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Never placed: above its stream's mark, inside an open gap, or of a new stream.
    No,
    /// Placed before.
    Yes,
    /// Below its stream's floor: a gap there was closed, so the book cannot tell.
    Unknowable,
}

/// One stream's state as it goes into a snapshot.
///
/// Sequence numbers are at most 62 bits, so they fit the signed 64-bit integers of BSON;
/// the stream itself travels inside `last`, an ordinary order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMarks {
    /// The id of the stream's highest placed number (its high-water mark).
    pub last: OrderId,
    /// Numbers below this are unknowable (0 while no gap was ever closed).
    pub floor: u64,
    /// Open gaps, lowest first, as inclusive `[first, last]` ranges of unplaced numbers.
    pub gaps: Vec<[u64; 2]>,
}

/// What one stream has placed.
#[derive(Debug, Clone)]
struct Stream {
    high: u64,
    floor: u64,
    /// Sorted, disjoint, inclusive ranges, all at or above `floor` and below `high`.
    gaps: Vec<(u64, u64)>,
}

impl Stream {
    /// A stream whose first placed number is `seq`: everything below it is an open gap.
    fn starting_at(seq: u64) -> Self {
        let mut stream = Stream {
            high: seq,
            floor: 0,
            gaps: Vec::new(),
        };
        if seq > 0 {
            stream.gaps.push((0, seq - 1));
        }
        stream
    }

    /// The index of the gap holding `seq`, if one does.
    fn gap_of(&self, seq: u64) -> Option<usize> {
        let i = self.gaps.partition_point(|&(_, last)| last < seq);
        (i < self.gaps.len() && self.gaps[i].0 <= seq).then_some(i)
    }

    fn placed(&self, seq: u64) -> Placed {
        if seq < self.floor {
            Placed::Unknowable
        } else if seq > self.high || self.gap_of(seq).is_some() {
            Placed::No
        } else {
            Placed::Yes
        }
    }

    fn record(&mut self, seq: u64) {
        if seq > self.high {
            if seq > self.high + 1 {
                self.gaps.push((self.high + 1, seq - 1));
            }
            self.high = seq;
        } else if let Some(i) = self.gap_of(seq) {
            let (first, last) = self.gaps[i];
            match (first < seq, seq < last) {
                (false, false) => {
                    self.gaps.remove(i);
                }
                (true, false) => self.gaps[i].1 = seq - 1,
                (false, true) => self.gaps[i].0 = seq + 1,
                (true, true) => {
                    self.gaps[i].1 = seq - 1;
                    self.gaps.insert(i + 1, (seq + 1, last));
                }
            }
        }
        if self.gaps.len() > MAX_OPEN_GAPS {
            let (_, last) = self.gaps.remove(0);
            self.floor = last + 1;
        }
    }
}

/// Every order id a book has placed, by stream. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct PlacedOrders {
    streams: HashMap<u128, Stream, foldhash::fast::RandomState>,
}

impl PlacedOrders {
    /// Whether `id` was placed before.
    #[inline]
    pub fn placed(&self, id: OrderId) -> Placed {
        match self.streams.get(&id.stream()) {
            Some(stream) => stream.placed(id.seq()),
            None => Placed::No,
        }
    }

    /// Records that `id` was placed. The caller checked [`PlacedOrders::placed`] is
    /// [`Placed::No`]; recording an id twice changes nothing.
    #[inline]
    pub fn record(&mut self, id: OrderId) {
        let seq = id.seq();
        self.streams
            .entry(id.stream())
            .and_modify(|s| s.record(seq))
            .or_insert_with(|| Stream::starting_at(seq));
    }

    /// How many streams the book knows.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Open gaps over all streams.
    pub fn open_gaps(&self) -> usize {
        self.streams.values().map(|s| s.gaps.len()).sum()
    }

    /// Every stream's state, in stream order (so equal states give equal snapshots).
    pub fn marks(&self) -> Vec<StreamMarks> {
        let mut marks: Vec<StreamMarks> = self
            .streams
            .iter()
            .map(|(&stream, s)| StreamMarks {
                last: OrderId::from_stream(stream, s.high),
                floor: s.floor,
                gaps: s.gaps.iter().map(|&(a, b)| [a, b]).collect(),
            })
            .collect();
        marks.sort_unstable_by_key(|m| m.last);
        marks
    }

    /// Restores the state [`PlacedOrders::marks`] listed, refusing marks no book could have
    /// produced (a stream listed twice, gaps out of order, overlapping, or outside
    /// `[floor, mark)`, more than [`MAX_OPEN_GAPS`]).
    pub fn from_marks(marks: &[StreamMarks]) -> Result<Self, String> {
        let mut placed = PlacedOrders::default();
        for m in marks {
            let high = m.last.seq();
            let mut next_free = m.floor;
            for &[first, last] in &m.gaps {
                if first < next_free || last < first || last >= high {
                    return Err(format!(
                        "stream of {} has a gap [{first}, {last}] out of order or range",
                        m.last
                    ));
                }
                next_free = last + 2;
            }
            if m.floor > high || m.gaps.len() > MAX_OPEN_GAPS {
                return Err(format!(
                    "stream of {} has a floor above its mark or too many gaps",
                    m.last
                ));
            }
            let stream = Stream {
                high,
                floor: m.floor,
                gaps: m.gaps.iter().map(|&[a, b]| (a, b)).collect(),
            };
            if placed.streams.insert(m.last.stream(), stream).is_some() {
                return Err(format!("stream of {} is listed twice", m.last));
            }
        }
        Ok(placed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(stream: u128, seq: u64) -> OrderId {
        OrderId::from_stream(stream, seq)
    }

    #[test]
    fn a_stream_without_gaps_costs_under_100_bytes_of_snapshot() {
        // The largest such stream: a v8 id with the highest number and a floor as long.
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut stream = crate::OrderStream::random(&mut rng);
        let last = stream.next_id();
        let marks = StreamMarks {
            last: OrderId::from_stream(last.stream(), crate::order::MAX_SEQ),
            floor: crate::order::MAX_SEQ,
            gaps: Vec::new(),
        };
        let json = serde_json::to_string(&marks).unwrap();
        assert!(json.len() < 100, "{} bytes: {json}", json.len());
    }

    #[test]
    fn numbers_above_the_mark_and_in_gaps_are_new_and_the_rest_were_placed() {
        let mut p = PlacedOrders::default();
        for seq in [1, 2, 5, 9] {
            assert_eq!(p.placed(id(7, seq)), Placed::No);
            p.record(id(7, seq));
        }
        assert_eq!(p.marks()[0].gaps, vec![[0, 0], [3, 4], [6, 8]]);
        for seq in [1, 2, 5, 9] {
            assert_eq!(p.placed(id(7, seq)), Placed::Yes);
        }
        for seq in [0, 3, 4, 6, 7, 8, 10, 1 << 40] {
            assert_eq!(p.placed(id(7, seq)), Placed::No, "{seq}");
        }
        assert_eq!(p.placed(id(8, 1)), Placed::No, "another stream");
        // Filling a gap from its middle splits it; from its ends shrinks it.
        p.record(id(7, 7));
        p.record(id(7, 3));
        p.record(id(7, 4));
        assert_eq!(p.marks()[0].gaps, vec![[0, 0], [6, 6], [8, 8]]);
        assert_eq!(p.open_gaps(), 3);
    }

    #[test]
    fn a_stream_past_the_gap_limit_closes_its_lowest_gap_and_says_so() {
        let mut p = PlacedOrders::default();
        // Every other number: each placed number after the first opens one gap.
        for n in 0..=MAX_OPEN_GAPS as u64 {
            p.record(id(1, 2 * n + 1));
        }
        assert_eq!(p.open_gaps(), MAX_OPEN_GAPS);
        assert_eq!(p.marks()[0].floor, 1, "gap [0, 0] was closed");
        assert_eq!(p.placed(id(1, 0)), Placed::Unknowable);
        assert_eq!(p.placed(id(1, 1)), Placed::Yes);
        assert_eq!(p.placed(id(1, 2)), Placed::No);
    }

    #[test]
    fn marks_round_trip_and_impossible_marks_are_refused() {
        let mut p = PlacedOrders::default();
        for (stream, seq) in [(1, 4), (1, 2), (2, 1), (3, 10)] {
            p.record(id(stream, seq));
        }
        let marks = p.marks();
        let restored = PlacedOrders::from_marks(&marks).unwrap();
        assert_eq!(restored.marks(), marks);
        for seq in 0..12 {
            for stream in 1..=3 {
                assert_eq!(restored.placed(id(stream, seq)), p.placed(id(stream, seq)));
            }
        }
        let bad = |gaps: Vec<[u64; 2]>, floor: u64| StreamMarks {
            last: id(1, 10),
            floor,
            gaps,
        };
        for m in [
            bad(vec![[3, 4], [1, 2]], 0),
            bad(vec![[1, 3], [3, 5]], 0),
            bad(vec![[1, 3], [4, 5]], 0), // adjacent gaps would be one
            bad(vec![[5, 10]], 0),
            bad(vec![[2, 1]], 0),
            bad(vec![[1, 2]], 2),
            bad(vec![], 11),
        ] {
            assert!(
                PlacedOrders::from_marks(std::slice::from_ref(&m)).is_err(),
                "{m:?}"
            );
        }
        assert!(PlacedOrders::from_marks(&[bad(vec![], 0), bad(vec![], 0)]).is_err());
    }
}
