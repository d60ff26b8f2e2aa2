"""Generated heads written in the BraTS layouts: geometric phantoms, anatomy phantoms, SynthSeg-style heads."""
