"""The drug library: reference pills, their drug facts, search, look-alikes and enrollment."""
