"""The bottom layer: the records, the wire format, decoding into frames, the C hot loop and its twins, atomic files, progress bars."""
