#!/usr/bin/perl
# sql/upgrade/expand.pl: builds an upgrade script from its parts, writing
# out the definitions an upgrade takes unchanged from the sources instead of
# keeping a second copy of them in the part.
#
#   perl sql/upgrade/expand.pl SOURCES... -- PARTS... > prepay--A--B.sql
#
# SOURCES are the install script's sources (sql/*.sql, in install order) of
# version B; PARTS are the files of sql/upgrade/A--B/ in name order.  Each
# part is copied as it is, except for its directive lines:
#
#   --@ copy function prepay.name    every CREATE, ALTER, COMMENT, GRANT and
#                                    REVOKE of the functions of that name
#   --@ copy view prepay.name        the view's CREATE, ALTER, COMMENT (of the
#                                    view and of its columns), GRANT, REVOKE
#   --@ copy table prepay.name       a new table's CREATE TABLE, its indexes
#                                    and its COMMENTs (of the table and of
#                                    its columns)
#   --@ copy trigger name ON prepay.table
#                                    the trigger's COMMENT (a part re-creates
#                                    a trigger itself: the install may also
#                                    have set it ENABLE ALWAYS)
#   --@ copy policy name ON prepay.table
#                                    the policy's CREATE and COMMENT (of a
#                                    policy the sources write out, not one
#                                    their loops create)
#
# which stand for those statements of the sources, in source order.  A
# CREATE FUNCTION or VIEW is written CREATE OR REPLACE, since the object
# may exist in the release being upgraded.  Most rights are given by the
# install in loops, not statements to copy (prepay._grant_routines, and
# _grant_views, which also sets a view's security_invoker, reset by CREATE
# OR REPLACE VIEW): an upgrade's last part runs those loops again.  A
# directive that matches nothing fails the build, naming it.  Statements
# are split the way PostgreSQL's lexer sees them: quotes, dollar quotes and
# comments hide their semicolons.

use strict;
use warnings;

my (@sources, @parts);
my $list = \@sources;
foreach my $arg (@ARGV)
{
	if ($arg eq '--') { $list = \@parts; next; }
	push @$list, $arg;
}
die "usage: expand.pl SOURCES... -- PARTS...\n" unless @sources && @parts;

# Split SQL text into its statements (each from its first token to its
# semicolon, comments before it left out).
sub statements
{
	my ($text) = @_;
	my (@out, $start);
	pos($text) = 0;
	while (pos($text) < length $text)
	{
		# white space and comments (nested block comments too)
		next if $text =~ /\G(?:\s+|--[^\n]*)/gc;
		if ($text =~ m{\G/\*}gc)
		{
			my $depth = 1;
			while ($depth > 0)
			{
				if ($text =~ m{\G/\*}gc) { $depth++; }
				elsif ($text =~ m{\G\*/}gc) { $depth--; }
				elsif ($text !~ m{\G[^/*]+|\G.}gcs) { die "unterminated comment\n"; }
			}
			next;
		}
		$start = pos($text) unless defined $start;
		if ($text =~ /\G(\$[A-Za-z_0-9]*\$)/gc)
		{
			my $tag = $1;
			$text =~ /\G.*?\Q$tag\E/gcs or die "unterminated dollar quote $tag\n";
		}
		elsif ($text =~ /\G;/gc)
		{
			push @out, substr($text, $start, pos($text) - $start);
			undef $start;
		}
		else
		{
			# a quoted string or identifier, a word, or any other character
			$text =~ /\G(?:'(?:[^']|'')*'|"(?:[^"]|"")*"|[A-Za-z_0-9.]+|.)/gcs;
		}
	}
	return @out;
}

# The objects a statement defines or describes, as "kind name" keys.
sub keys_of
{
	my ($s) = @_;
	my $name = qr/[a-z_][a-z_0-9]*\.[a-z_][a-z_0-9]*/;
	return ("function $1")
	  if $s =~ /^(?:CREATE(?:\s+OR\s+REPLACE)?|ALTER|COMMENT\s+ON)\s+FUNCTION\s+($name)\s*\(/;
	return ("function $1")
	  if $s =~ /^(?:GRANT|REVOKE)\b[^;]*?\bON\s+(?:FUNCTION|ROUTINE)\s+($name)\s*\(/;
	return ("view $1")
	  if $s =~ /^(?:CREATE(?:\s+OR\s+REPLACE)?|ALTER|COMMENT\s+ON)\s+VIEW\s+($name)\b/;
	return ("view $1", "table $1") if $s =~ /^COMMENT\s+ON\s+COLUMN\s+($name)\.[a-z_0-9]+\s/;
	return ("view $1", "table $1") if $s =~ /^(?:GRANT|REVOKE)\b[^;]*?\bON\s+(?:TABLE\s+)?($name)\s/;
	return ("table $1") if $s =~ /^(?:CREATE\s+TABLE|COMMENT\s+ON\s+TABLE)\s+($name)\b/;
	return ("table $1") if $s =~ /^CREATE\s+(?:UNIQUE\s+)?INDEX\s+[a-z_0-9]+\s+ON\s+($name)\b/;
	return ("trigger $1 ON $2") if $s =~ /^COMMENT\s+ON\s+TRIGGER\s+([a-z_0-9]+)\s+ON\s+($name)\b/;
	return ("policy $1 ON $2") if $s =~ /^(?:CREATE|COMMENT\s+ON)\s+POLICY\s+([a-z_0-9]+)\s+ON\s+($name)\b/;
	return ();
}

sub slurp
{
	my ($file) = @_;
	open my $fh, '<', $file or die "$file: $!\n";
	local $/;
	return scalar <$fh>;
}

my %definitions;
foreach my $file (@sources)
{
	foreach my $s (statements(slurp($file)))
	{
		push @{ $definitions{$_} }, $s foreach keys_of($s);
	}
}

foreach my $part (@parts)
{
	open my $fh, '<', $part or die "$part: $!\n";
	while (my $line = <$fh>)
	{
		unless ($line =~ /^--\@\s+copy\s+(function|view|table|trigger|policy)\s+(.+?)\s*$/)
		{
			die "$part:$.: not a directive: $line" if $line =~ /^--\@/;
			print $line;
			next;
		}
		my $key = "$1 $2";
		my $found = $definitions{$key}
		  or die "$part:$.: the sources define no $key\n";
		foreach my $s (@$found)
		{
			(my $text = $s) =~ s/^CREATE\s+(FUNCTION|VIEW)\b/CREATE OR REPLACE $1/;
			print $text, "\n";
		}
	}
	close $fh;
}
