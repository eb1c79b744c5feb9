"""The bench stage: sessions of interleaved rounds turned into results with intervals."""
