"""The second embedded model family: an encoder, a classifier and a decoder (three groups).

Its group structure differs from the demo's eight groups on purpose: benchmarks of the search and
of the automatic selector run on both, so a policy tuned to one structure shows it on the other.
"""
