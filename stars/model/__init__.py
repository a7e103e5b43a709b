"""The MAMP transformer (encoder, decoder, motion-aware masking) and checkpoints."""
