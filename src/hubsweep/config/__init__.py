"""Stage 1, configuration: the structured-config schemas (one typed dataclass per option,
`schema`; the head, optimizer and schedule choices in `groups`; the study's `sweep.*` in
`sweep`), what their types cannot express (`validation`), the schemas of the tools beside
the runs (`tools`), and where the Hydra config tree lives (`paths`).

May import: `hubsweep.errors`, `hubsweep.metrics`. Every other stage may import it.
"""
