"""Transfer to a target task: visual prompts (prompt), label maps (labelmap), the LP and VP
training loops (loops) and one run of either (train), optimizers and schedules (schedules)."""
