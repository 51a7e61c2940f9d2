"""Pure decisions, each tested alone: what is a run, a file's kind and role, params,
secrets, what is watched, bytecode -> source."""
