"""The composition root (see DESIGN.md §2); filled in with the serve command."""
