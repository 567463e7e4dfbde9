"""The verbs of the `gaincell` command by theme; `gaincell.cli` gathers them into one group with one error
handler."""
