"""The hearing domain: sites, courtrooms, hearings, roles, permissions, schedule, audit, stores."""
