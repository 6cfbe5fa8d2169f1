"""The backup library behind the CLI, the agent and DS: make, put on a card, fetch and restore archives (ops), and the key pairs and trust anchors that sign and verify them (keys)."""
