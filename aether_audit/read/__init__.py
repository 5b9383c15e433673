"""Reading a stream: the whole-stream reader, the subject index, and the ``Reader`` protocol the layers above take."""
