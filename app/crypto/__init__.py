"""Keys and signatures: the floor every part of the node stands on. Imports nothing of the project."""
