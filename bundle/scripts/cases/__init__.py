"""The typed case pipeline shared by inference and evaluation: read -> predict -> write.

- :mod:`.case`: ``Case`` (a scan on the network grid, its native grid and modality) and ``CaseResult`` (the label
  map and what else a user asked for, on the input's grid), with per-stage timings;
- :mod:`.read`: ``CaseReader`` turns an input into a ``Case`` (on the compute device when it is a GPU);
- :mod:`.predict`: ``CasePredictor`` loads the weights once and turns a ``Case`` into a ``CaseResult``;
- :mod:`.write`: ``CaseWriter`` stages and commits a ``CaseResult``'s files;
- :mod:`.segment`: the inference step wiring the three, with background reading and writing (:mod:`.overlap`) and
  cases shared over ``torchrun`` ranks (:mod:`.ranks`).
"""
