-- ARGV[3] parent: its live links as "stream child" strings.
return live_children(ARGV[3])
