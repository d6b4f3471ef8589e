"""The endpoints, one router per part of the SQL API: numbers, types, reports, administration, export."""
