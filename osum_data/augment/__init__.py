"""Audio augmentation and composition stages (DESIGN section 3, 6): noise / reverberation copies
(`augment`) and speech + vocal-event composites (`event_composite`). Both write their audio as FLAC
into the shard's files directory and record where every sample of it came from."""
