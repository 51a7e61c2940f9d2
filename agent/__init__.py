"""The onlooker agent: sources -> one event queue -> the assembler (single writer) -> store."""
