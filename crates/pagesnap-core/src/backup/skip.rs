//! Skip-delta bases: which link of the parent's chain at a position a new
//! version there is made against (DELTAS.md, "Skip-delta bases").
//!
//! Each position carries a state (this machine's sketch file keeps it per
//! chunk of the newest snapshot): a *floor*, the depth of the chunk its cycle
//! started from (0 for one stored whole), and a version `v` counted from it.
//! Version `v` is a delta against version `v & (v - 1)` (its lowest set bit
//! cleared), which is always a link of version `v - 1`'s chain, the one at
//! depth `floor + popcount(v) - 1`. So a chain is `floor + popcount(v)` deltas
//! deep, at most [`MAX_DEPTH`], 2.5 on average over a cycle from a whole
//! chunk, against 4 for chains that grow one link a version up to 8, for about
//! the same bytes: a delta spans `v`'s lowest set bit of versions, and a whole
//! chunk is stored once per 32 versions instead of once per 9 (PERFORMANCE.md
//! has the simulation and the measurements). A chunk not made as planned (a
//! content-found base after a VACUUM, a chain shallower than planned) starts a
//! shorter cycle from itself, at its depth, so no later version goes below it
//! to links that are another page's old content.
//!
//! Pure functions; the backup follows the parent's chain to the link [`next`]
//! names (`Bases::raw_toward`).

/// The deepest chain skip-delta bases make. A content-found base is taken
/// only below it, so every new chain stays within.
pub(crate) const MAX_DEPTH: u8 = 5;

/// The state of a chunk whose history is not known (a chunk found by dedup, a
/// sketch of version 1): its next version is made against the chunk itself.
pub(crate) const UNKNOWN: u8 = 0xff;

/// Low bits of a state: the version; high bits: the floor.
const VERSION_BITS: u8 = MAX_DEPTH;

fn state(floor: u8, version: u8) -> u8 {
    (floor << VERSION_BITS) | version
}

/// The depth of a chunk of this state (as planned).
fn depth_of(s: u8) -> u32 {
    (s >> VERSION_BITS) as u32 + (s & ((1 << VERSION_BITS) - 1)).count_ones()
}

/// What the next version at a position is made against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Not against its chain: stored whole, or against a content-found base.
    Whole,
    /// A delta against the link of the parent's chain at `depth` (the parent's
    /// chunk itself when its chain is shallower; `u8::MAX`: the chunk itself);
    /// the new chunk's state, if it is made as planned, is `planned`.
    Link { depth: u8, planned: Option<u8> },
}

/// The next version after a chunk of state `s` (the parent's chunk at the
/// position). Any byte is a state: one out of range plans a whole chunk.
pub(crate) fn next(s: u8) -> Next {
    if s == UNKNOWN {
        return Next::Link {
            depth: u8::MAX,
            planned: None,
        };
    }
    let (floor, version) = (s >> VERSION_BITS, s & ((1 << VERSION_BITS) - 1));
    if floor >= MAX_DEPTH {
        return Next::Whole;
    }
    // A cycle from a floor f has 2^(MAX_DEPTH - f) versions, so none is
    // deeper than MAX_DEPTH.
    let n = version + 1;
    if n >= 1 << (MAX_DEPTH - floor) {
        return Next::Whole;
    }
    Next::Link {
        depth: floor + n.count_ones() as u8 - 1,
        planned: Some(state(floor, n)),
    }
}

/// The state a new chunk records, from how it was stored: `planned` is what
/// [`next`] planned, `kept` the depth of the kept delta (none: stored whole)
/// and whether its base was the link planned. A delta made as planned is the
/// planned state; any other delta starts a cycle from itself, at its depth; a
/// chunk stored whole is state 0.
pub(crate) fn recorded(planned: Option<u8>, kept: Option<(u8, bool)>) -> u8 {
    match (planned, kept) {
        (_, None) => 0,
        (Some(p), Some((depth, true))) if depth as u32 == depth_of(p) => p,
        (_, Some((depth, _))) => state(depth.min(MAX_DEPTH), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(depth: u8, floor: u8, version: u8) -> Next {
        Next::Link {
            depth,
            planned: Some(state(floor, version)),
        }
    }

    /// From a whole chunk, a position changed at every backup walks the
    /// classic skip-delta pattern: each version against the one with its
    /// lowest set bit cleared; from a floor, the same above it, shorter.
    #[test]
    fn versions_and_their_bases_as_a_table() {
        let table: &[(u8, Next)] = &[
            (0, link(0, 0, 1)),
            (1, link(0, 0, 2)),
            (2, link(1, 0, 3)),
            (3, link(0, 0, 4)),
            (4, link(1, 0, 5)),
            (5, link(1, 0, 6)),
            (6, link(2, 0, 7)),
            (7, link(0, 0, 8)),
            (14, link(3, 0, 15)),
            (15, link(0, 0, 16)),
            (29, link(3, 0, 30)),
            (30, link(4, 0, 31)),
            (31, Next::Whole),
            // Floor 2 (a chunk two deep that started a cycle): 8 versions.
            (state(2, 0), link(2, 2, 1)),
            (state(2, 1), link(2, 2, 2)),
            (state(2, 2), link(3, 2, 3)),
            (state(2, 6), link(4, 2, 7)),
            (state(2, 7), Next::Whole),
            (state(4, 0), link(4, 4, 1)),
            (state(4, 1), Next::Whole),
            (state(5, 0), Next::Whole),
            // Out of range (damage, another build): a whole chunk.
            (state(6, 3), Next::Whole),
            (state(1, 17), Next::Whole),
            (
                UNKNOWN,
                Next::Link {
                    depth: u8::MAX,
                    planned: None,
                },
            ),
        ];
        for (s, want) in table {
            assert_eq!(next(*s), *want, "after state {s:#x}");
        }
    }

    /// Following the plan from any start, the base named is always a link of
    /// the parent's chain (never below the cycle's floor), no chain is deeper
    /// than MAX_DEPTH, and from a whole chunk the mean depth is 2.5.
    #[test]
    fn cycles_keep_chains_within_the_bound() {
        for floor in 0..=MAX_DEPTH {
            // The chain of the current version: the states of its links, bottom
            // first; links below the floor are another page's, never named.
            let mut chain: Vec<u8> = vec![UNKNOWN; floor as usize];
            chain.push(state(floor, 0));
            let mut depths = Vec::new();
            for _ in 0..64 {
                let top = *chain.last().unwrap();
                match next(top) {
                    Next::Whole => chain = vec![0],
                    Next::Link { depth, planned } => {
                        let planned = planned.unwrap();
                        let base = chain[depth as usize];
                        assert_ne!(base, UNKNOWN, "state {planned:#x} below its floor");
                        let v = planned & 31;
                        if base >> 5 == planned >> 5 {
                            assert_eq!(base & 31, v & (v - 1), "state {planned:#x}");
                        }
                        chain.truncate(depth as usize + 1);
                        chain.push(planned);
                        assert_eq!(recorded(Some(planned), Some((depth + 1, true))), planned);
                    }
                }
                let d = chain.len() as u8 - 1;
                assert!(d <= MAX_DEPTH, "depth {d} from floor {floor}");
                depths.push(d);
            }
            if floor == 0 {
                let cycle = &depths[..32];
                let mean = cycle.iter().map(|&d| d as f64).sum::<f64>() / 32.0;
                assert_eq!(mean, 2.5);
            }
        }
    }

    #[test]
    fn other_outcomes_start_a_cycle_from_the_chunk() {
        assert_eq!(recorded(Some(5), None), 0, "stored whole");
        assert_eq!(recorded(None, None), 0);
        // Against a content-found base two deep: the new chunk is three deep,
        // and the next version is made against it.
        assert_eq!(recorded(None, Some((3, false))), state(3, 0));
        assert_eq!(next(state(3, 0)), link(3, 3, 1));
        // Planned version 7 (three deep) against a chain only one deep.
        assert_eq!(recorded(Some(7), Some((2, true))), state(2, 0));
        // A chunk whose history was unknown, against itself.
        assert_eq!(recorded(None, Some((4, true))), state(4, 0));
        // An old chain deeper than the bound: the next version is whole.
        assert_eq!(recorded(None, Some((8, false))), state(5, 0));
        assert_eq!(next(state(5, 0)), Next::Whole);
    }
}
