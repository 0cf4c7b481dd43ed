"""The `resnets` command's subcommands, a module per kind of work, each parser beside its handler.

`models` (the registry and its costs), `train`, `use` (eval, predict, embed, export, convert),
`experiments` (the paper's experiments, the report, the demo) and `data` (pack); `arguments` holds
what their parsers share. `resnets.cli` registers them and maps errors to exit statuses.
"""
