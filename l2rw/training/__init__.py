"""The training loop (loop.fit) and what it keeps between steps: its state and checkpoints, the
optimizer and lr schedule, where the example weights go, and the class prior it trained on."""
