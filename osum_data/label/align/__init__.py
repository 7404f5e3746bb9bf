"""Word alignment (SRWT): reference words and checks (`words`), and the aligner stages:
`align_pocketsphinx`, `align_whisper` (+ `transcribe_whisper`), `align_ctc`, `align_import`.

Importing this package registers the stages (named in the `osum_data.stages` entry points).
"""

from osum_data.label.align import ctc, imported, sphinx, whisper  # noqa: F401  (registers the stages)
