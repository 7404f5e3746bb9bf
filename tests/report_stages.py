"""A stage that reports LLM-style token counters without calling an LLM, for the report tests.

The report reads any stage's `StageResult.counters` (the LLM stages report requests and prompt /
completion tokens this way); running the embedded LLM server here would only make the test slow.
"""

from __future__ import annotations

from osum_data.run.stage import StageResult, register_stage


@register_stage("count_tokens_for_report")
class CountTokens:
    """Keeps every cut; counts 'prompt tokens' as transcript characters and 'completion tokens' as 3
    per cut, one request per cut."""

    def __init__(self):
        pass

    def __call__(self, cuts, ctx):
        prompt = sum(len(c.supervisions[0].text or "") for c in cuts)
        return StageResult(
            kept=list(cuts),
            counters={
                "llm": {"requests": len(cuts), "prompt_tokens": prompt, "completion_tokens": 3 * len(cuts)}
            },
        )
