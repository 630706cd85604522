# Budgets, windows, reservations and controls arrive with the budgets issue (DESIGN.md section 4).
