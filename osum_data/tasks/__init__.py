"""Task registry: tags, label vocabularies, prompt pools, target renderers and parsers."""

from osum_data.tasks.formats import FormatError, Parsed, Word, insert_reasoning, parse_target, render_target
from osum_data.tasks.prompts import draw_instruction, instruction_agrees, prompt_language, prompt_pool
from osum_data.tasks.registry import LabelError, NoLabel, registry

__all__ = [
    "FormatError",
    "LabelError",
    "NoLabel",
    "Parsed",
    "Word",
    "draw_instruction",
    "insert_reasoning",
    "instruction_agrees",
    "parse_target",
    "prompt_language",
    "prompt_pool",
    "registry",
    "render_target",
]
