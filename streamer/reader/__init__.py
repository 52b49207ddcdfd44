"""The reader: what other services install to read the published posteriors.

Imports numpy and redis only (``pip install "hpmf-streamer[reader]"``; no
torch, Pyro or kafka-python). The data flow out of Redis, in file order:

* :mod:`streamer.reader.redis_record`: the published record layout
  (docs/redis_format.md), the one codec of user and global records;
* :mod:`streamer.reader.lookup`: the lookup library (records to posteriors);
* :mod:`streamer.reader.lookup_math`: its predictive maths, in numpy;
* :mod:`streamer.reader.lookup_serve`: predictions and ranked lists;
* :mod:`streamer.reader.lookup_results`: what it returns, and its errors.
"""
