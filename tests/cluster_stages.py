"""A stage that notes which Ray node ran each shard (for the two-node cluster test).

It writes the node's IP into the shard's files folder and leaves the cuts untouched, so the run's
manifests stay byte-identical to a run without it.
"""

from __future__ import annotations

from osum_data.run.stage import StageResult, register_stage


@register_stage("note_node")
class NoteNode:
    def __init__(self):
        import ray

        self.node = ray.util.get_node_ip_address()

    def __call__(self, cuts, ctx):
        (ctx.files_dir / "node.txt").write_text(self.node)
        return StageResult(kept=list(cuts))
