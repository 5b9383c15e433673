"""PySpark: the stream as a Spark data source and the audit on Spark (``pip install 'aether_audit[spark]'``)."""
