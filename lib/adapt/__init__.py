"""Transfer to a target task: visual prompts (prompt), label maps (labelmap), the LP and VP
training loops (train), and the optimizers and schedules they may use (schedules)."""
