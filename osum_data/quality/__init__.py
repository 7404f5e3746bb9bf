"""Quality measures and filters (issue #17).

Each measure is a stage that writes one or more numbers to `custom.quality.<name>` of the cut's
first supervision (the cut's own `custom` when it has none) and names its method in
`custom.label_source["quality.<name>"]`. The `quality_filter` stage then rejects by threshold with
a code naming the measure, or only labels (`keep_measures_only`). Modules, one measure each:
`snr` (WADA-SNR), `clipping`, `bandwidth`, `speech_ratio` (silero VAD), `dnsmos` (P.835 + P.808
from the `speechmos` ONNX models), `filters` (thresholds from YAML).
"""
