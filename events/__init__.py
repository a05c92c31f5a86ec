"""Events from masks: objects that wrap in longitude, tracks linked by overlap.

`climseg-events` (`events.cli.main`) writes events.csv and tracks.csv.
"""
