//! Progressive filling (water-filling) over the circuit tree.
//!
//! A level `t` rises from 0; session `c` is at `clamp(w_c * t, lo_c, hi_c)`: it waits at
//! its floor `lo_c` until the level reaches it, then rises at rate `w_c`, until it reaches
//! its own cap `hi_c` (charger max or EV demand) or a resource it uses saturates. A
//! resource is a node's current on one phase (a session uses it with coefficient 1 if it
//! draws on that phase, else not at all: a 1-phase car never waits for another phase), or
//! a node's power limit as a limit on the sum of phase currents (coefficient: the number
//! of phases the session draws on). When a resource saturates, every session still moving
//! that uses it stops there; the others go on rising into the capacity that is left. The
//! result is max-min fair: no session can get more without taking from one that has less
//! or the same.
//!
//! Event-driven: session start and cap times are sorted once; the next saturation among
//! the resources comes from a tournament tree over them, updated when a session changes
//! pace. Each session changes pace at most twice and touches only the resources on its
//! path, so a run costs O(n log n + n * depth * log R).

use super::capacity::RES_PER_NODE;
use super::model::CircuitTree;

/// One session to fill.
#[derive(Debug, Clone)]
pub(crate) struct FillSession {
    /// Floor (A): already counted in the room by admission.
    pub lo: f64,
    /// Cap (A), `>= lo`.
    pub hi: f64,
    /// Rate: 1 for equal current, `1 / phases` for equal power.
    pub w: f64,
    /// Tree position of its node.
    pub node: usize,
    /// Site phases it draws on.
    pub mask: [bool; 3],
    /// Its `(resource, coefficient)` pairs in the shared path list (limited resources only).
    pub res: std::ops::Range<usize>,
}

/// What stopped a session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Stop {
    /// Its own cap.
    Cap,
    /// A saturated resource.
    Resource(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pace {
    Waiting,
    Rising,
    Frozen,
}

/// Minimum over resources' saturation times; ties go to the lower index.
struct MinTree {
    size: usize,
    t: Vec<f64>,
    at: Vec<usize>,
}

impl MinTree {
    fn new(n: usize) -> MinTree {
        let size = n.max(1).next_power_of_two();
        MinTree { size, t: vec![f64::INFINITY; 2 * size], at: (0..2 * size).map(|i| i.saturating_sub(size)).collect() }
    }

    fn set(&mut self, i: usize, v: f64) {
        let mut p = i + self.size;
        self.t[p] = v;
        self.at[p] = i;
        p /= 2;
        while p >= 1 {
            let (l, r) = (2 * p, 2 * p + 1);
            let from = if self.t[l] <= self.t[r] { l } else { r };
            if self.t[p] == self.t[from] && self.at[p] == self.at[from] {
                break; // nothing above changes
            }
            self.t[p] = self.t[from];
            self.at[p] = self.at[from];
            p /= 2;
        }
    }

    fn min(&self) -> (f64, usize) {
        (self.t[1], self.at[1])
    }
}

struct State<'a> {
    sessions: &'a [FillSession],
    paths: &'a [(usize, f64)],
    room: &'a [f64],
    /// Extra use (above the floors) = `f + s * t`.
    f: Vec<f64>,
    s: Vec<f64>,
    rising: Vec<u32>,
    saturated: Vec<bool>,
    tree: MinTree,
    /// Resources whose saturation time must be recomputed, once per batch of events.
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    pace: Vec<Pace>,
    out: Vec<(f64, Stop)>,
}

impl State<'_> {
    fn touch(&mut self, r: usize) {
        if !self.is_dirty[r] {
            self.is_dirty[r] = true;
            self.dirty.push(r);
        }
    }

    fn flush(&mut self, t: f64) {
        while let Some(r) = self.dirty.pop() {
            self.is_dirty[r] = false;
            let when = if self.rising[r] > 0 && !self.saturated[r] && self.s[r] > 0.0 {
                ((self.room[r] - self.f[r]) / self.s[r]).max(t)
            } else {
                f64::INFINITY
            };
            self.tree.set(r, when);
        }
    }

    fn start(&mut self, c: usize) {
        if self.pace[c] != Pace::Waiting {
            return;
        }
        self.pace[c] = Pace::Rising;
        let (sessions, paths) = (self.sessions, self.paths);
        let sess = &sessions[c];
        for &(r, a) in &paths[sess.res.clone()] {
            self.f[r] -= a * sess.lo;
            self.s[r] += a * sess.w;
            self.rising[r] += 1;
            self.touch(r);
        }
    }

    fn freeze(&mut self, c: usize, t: f64, why: Stop) {
        let (sessions, paths) = (self.sessions, self.paths);
        let sess = &sessions[c];
        match self.pace[c] {
            Pace::Frozen => return,
            Pace::Waiting => self.out[c] = (sess.lo, why),
            Pace::Rising => {
                let x = (sess.w * t).clamp(sess.lo, sess.hi);
                self.out[c] = (x, why);
                for &(r, a) in &paths[sess.res.clone()] {
                    self.f[r] += a * x;
                    self.rising[r] = self.rising[r].saturating_sub(1);
                    // Exactly 0 when nothing rises, not a rounding residue faking a slope.
                    self.s[r] = if self.rising[r] == 0 { 0.0 } else { self.s[r] - a * sess.w };
                    self.touch(r);
                }
            }
        }
        self.pace[c] = Pace::Frozen;
    }
}

/// Fills `members` (indices into `sessions`, sorted by tree position of their node) from
/// their floors up, and takes what they get above their floors out of `room`. Returns each
/// member's current and what stopped it, indexed like `sessions` (non-members: floor).
pub(crate) fn fill(
    sessions: &[FillSession],
    members: &[usize],
    paths: &[(usize, f64)],
    room: &mut [f64],
    tree: &CircuitTree,
) -> Vec<(f64, Stop)> {
    let n_res = room.len();
    let mut st = State {
        sessions,
        paths,
        room,
        f: vec![0.0; n_res],
        s: vec![0.0; n_res],
        rising: vec![0; n_res],
        saturated: vec![false; n_res],
        tree: MinTree::new(n_res),
        dirty: Vec::new(),
        is_dirty: vec![false; n_res],
        pace: vec![Pace::Frozen; sessions.len()],
        out: sessions.iter().map(|s| (s.lo, Stop::Cap)).collect(),
    };
    for &c in members {
        st.pace[c] = Pace::Waiting;
    }
    // Event times, sorted once; ties by index (a total order: deterministic).
    let mut starts: Vec<(f64, usize)> = members.iter().map(|&c| (sessions[c].lo / sessions[c].w, c)).collect();
    starts.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut caps: Vec<(f64, usize)> = members.iter().map(|&c| (sessions[c].hi / sessions[c].w, c)).collect();
    caps.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut si, mut ci) = (0, 0);
    let mut t = 0.0f64;
    loop {
        while si < starts.len() && st.pace[starts[si].1] != Pace::Waiting {
            si += 1;
        }
        while ci < caps.len() && st.pace[caps[ci].1] == Pace::Frozen {
            ci += 1;
        }
        let ts = starts.get(si).map_or(f64::INFINITY, |e| e.0);
        let tc = caps.get(ci).map_or(f64::INFINITY, |e| e.0);
        let (tr, r) = st.tree.min();
        // Ties: starts first, then saturations, then caps. Events at the same time are
        // handled as one batch, so a resource's saturation time is recomputed once.
        if ts.is_finite() && ts <= tr && ts <= tc {
            t = t.max(ts);
            while si < starts.len() && starts[si].0 == ts {
                st.start(starts[si].1);
                si += 1;
            }
        } else if tr.is_finite() && tr <= tc {
            t = t.max(tr);
            st.saturated[r] = true;
            st.tree.set(r, f64::INFINITY);
            saturate(&mut st, members, r, t, tree);
        } else if tc.is_finite() {
            t = t.max(tc);
            while ci < caps.len() && caps[ci].0 == tc {
                let c = caps[ci].1;
                // A session capped at its floor starts and stops at the same time.
                st.start(c);
                st.freeze(c, t, Stop::Cap);
                ci += 1;
            }
        } else {
            break;
        }
        st.flush(t);
    }
    let State { f, out, .. } = st;
    for (r, used) in f.iter().enumerate() {
        if room[r].is_finite() {
            room[r] = (room[r] - used).max(0.0);
        }
    }
    out
}

/// Freezes every moving member that uses resource `r`.
fn saturate(st: &mut State<'_>, members: &[usize], r: usize, t: f64, tree: &CircuitTree) {
    let node = r / RES_PER_NODE;
    let k = r % RES_PER_NODE;
    let end = tree.subtree_end(node);
    let sessions = st.sessions;
    let lo = members.partition_point(|&c| sessions[c].node < node);
    let hi = members.partition_point(|&c| sessions[c].node < end);
    for &c in &members[lo..hi] {
        if st.pace[c] != Pace::Frozen && (k == 3 || sessions[c].mask[k]) {
            st.freeze(c, t, Stop::Resource(r));
        }
    }
}
