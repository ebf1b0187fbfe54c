"""Wire protocols: thin REST layers over the data plane, and the codecs they share."""
