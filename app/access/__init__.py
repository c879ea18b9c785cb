"""Who may do what: roles and their policies, users and service accounts (the teams issue)."""
