"""One grouping of every cut of a mix, for all tasks together: duplicates, lineage groups, dev/test.

- Duplicates: two cuts with the same audio (osum_data.mix.lineage.audio_signature), task key and
  target are one sample; the first occurrence (datasets in config order, lines in file order) is kept.
- Groups: connected components of the graph "cut -- source key" (lineage keys, plus the speaker where
  the mix holds speakers out whole), over all datasets of all tasks at once: two cuts that share a
  recording, a clip, a long recording, a source cut or a speaker are in one group, whichever tasks
  they belong to, and a group is train, dev or test as a whole. So nothing shared crosses
  train <-> dev/test in any task.
- Held-out sets: groups in the order of a seeded hash of their keys fill each task's dev and test
  targets; a group goes to dev/test only if it fits every task it holds cuts of. A task whose cuts
  are all in groups that cannot be held out keeps a short dev/test and the summary says so; nothing
  is moved across the line to fill it.

Memory: per cut, the 8-byte hashes of its keys (a few) and 4-byte indexes, in numpy arrays; the
components come from scipy's sparse graph routines (C), the group loop touches one entry per group.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from osum_data.mix.lineage import SRC, key_hash

TRAIN, DEV, TEST, DROP = 0, 1, 2, 3
SPEAKER = "spk:"
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each value (splitmix64's finaliser): the group draws."""
    z = x.astype(np.uint64) + np.uint64(key_hash(f"mix-split:{seed}"))
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def graph_key(key: str) -> int:
    """The 64-bit node of a key: its hash with the lowest bit saying whether it is a file path (1)
    or an id or speaker (0). Paths link cuts but never draw a group's split, so the same corpus in
    another folder splits the same way."""
    h = key_hash(key)
    return h | 1 if key.startswith(SRC) else h & ~1


@dataclass
class LineageGraph:
    """Edges cut -> key hash, collected while the manifests are scanned (global cut indexes)."""

    cuts: array = field(default_factory=lambda: array("I"))
    keys: array = field(default_factory=lambda: array("Q"))
    n: int = 0  # cuts added

    def add(self, keys: Iterable[str]) -> int:
        """Add one cut with its keys; returns its global index."""
        i = self.n
        for k in keys:
            self.cuts.append(i)
            self.keys.append(graph_key(k))
        self.n += 1
        return i


def first_occurrences(sample_keys: np.ndarray) -> np.ndarray:
    """For each position, the position of the first occurrence of its sample key (itself if first)."""
    if not len(sample_keys):
        return np.zeros(0, np.int64)
    _, first, inverse = np.unique(sample_keys, return_index=True, return_inverse=True)
    return first[inverse]


def components(
    edge_cuts: np.ndarray, edge_keys: np.ndarray, n_cuts: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(component label per cut, draw per component): connected components of cuts and keys; a
    component's draw is the smallest seeded hash of its id and speaker keys (order-independent,
    seed-dependent, the same wherever the corpus lies).
    Cuts without any edge (dropped duplicates) get label -1."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    uniq, inv = np.unique(edge_keys, return_inverse=True)
    n = n_cuts + len(uniq)
    graph = coo_matrix(
        (np.ones(len(edge_cuts), np.int8), (edge_cuts.astype(np.int64), n_cuts + inv.astype(np.int64))),
        shape=(n, n),
    ).tocsr()
    _, labels = connected_components(graph, directed=False)
    key_labels = labels[n_cuts:]
    top = np.iinfo(np.uint64).max
    draws = np.full(int(labels.max()) + 1 if n else 0, top, dtype=np.uint64)
    key_draws = np.where(uniq & np.uint64(1), np.uint64(top), mix64(uniq, seed))  # paths never draw
    np.minimum.at(draws, key_labels, key_draws)
    cut_labels = labels[:n_cuts].astype(np.int64)
    has_edge = np.zeros(n_cuts, bool)
    has_edge[edge_cuts] = True
    cut_labels[~has_edge] = -1
    return cut_labels, draws


@dataclass
class Targets:
    """Per task: unique cuts, wanted dev and test sizes, the cap per held-out split."""

    n: list[int]
    want: dict[int, list[int]]  # split -> per task
    max_cuts: int


def assign(
    labels: np.ndarray,
    task_of: np.ndarray,
    draws: np.ndarray,
    pinned: np.ndarray,
    t: Targets,
) -> tuple[np.ndarray, dict[int, list[int]], list[tuple[int, int, int]]]:
    """Split per group: (split per group, held-out cuts got per split and task, per task (groups,
    largest group's cuts, smallest group's cuts)). Groups are taken in draw order; a group goes to
    test (then dev) when a task of it still wants cuts there and it fits every task it holds cuts
    of: at most half again the target (+1), or any size up to a quarter of the task for its first
    group there; never beyond max_cuts; never the task's last train cut; never a pinned group."""
    n_tasks = len(t.n)
    n_groups = len(draws)
    split = np.zeros(n_groups, np.uint8)
    got = {TEST: [0] * n_tasks, DEV: [0] * n_tasks}
    ok = labels >= 0
    pair = labels[ok] * n_tasks + task_of[ok]
    up, counts = np.unique(pair, return_counts=True)
    g_of, t_of = up // n_tasks, up % n_tasks
    starts = np.searchsorted(g_of, np.arange(n_groups + 1))
    stats = []
    for k in range(n_tasks):
        c = counts[t_of == k]
        stats.append((len(c), int(c.max()) if len(c) else 0, int(c.min()) if len(c) else 0))
    open_ = {(w, k) for w in (TEST, DEV) for k in range(n_tasks) if t.want[w][k] > 0}
    if not open_:
        return split, got, stats
    order = np.argsort(draws, kind="stable")
    # Pass 1: every task of a group within its own allowance. Pass 2, only for what is still short: a
    # task the group also holds cuts of (already served) may go over its allowance, up to a third of
    # its cuts held out (a group shared by tasks cannot be cut to fit each exactly).
    for relaxed in (False, True):
        for g in order:
            a, b = starts[g], starts[g + 1]
            if a == b or pinned[g] or split[g] != TRAIN:
                continue
            tasks, cuts = t_of[a:b].tolist(), counts[a:b].tolist()
            for w in (TEST, DEV):
                needy = [k for k in tasks if (w, k) in open_]
                if not needy:
                    continue
                if all(
                    _fits(w, k, c, got, t, relaxed and k not in needy)
                    for k, c in zip(tasks, cuts, strict=True)
                ):
                    split[g] = w
                    for k, c in zip(tasks, cuts, strict=True):
                        got[w][k] += c
                        if got[w][k] >= t.want[w][k]:
                            open_.discard((w, k))
                    break
            if not open_:
                return split, got, stats
    return split, got, stats


def _fits(w: int, k: int, c: int, got: dict[int, list[int]], t: Targets, companion: bool = False) -> bool:
    """Whether `c` more cuts of task `k` fit its held-out split `w` (a companion: a task the group
    also holds cuts of, already served, in the second pass)."""
    want = t.want[w][k]
    if want <= 0 or got[w][k] + c > t.max_cuts:
        return False
    held = got[TEST][k] + got[DEV][k] + c
    if held >= t.n[k]:  # keep at least one training cut
        return False
    if companion:
        return held <= t.n[k] / 3
    return got[w][k] + c <= 1.5 * want + 1 or (got[w][k] == 0 and c <= t.n[k] / 4)
