"""The application on top of the stages: the CLI and its verbs (commands/), the demo, the design-space exploration,
the file inspection and the HTML report. It may import anything; nothing in the base or the stages imports it."""
