"""The verbs of the `gaincell` command by theme; `gaincell.app.cli` gathers them into one group with one error
handler."""
