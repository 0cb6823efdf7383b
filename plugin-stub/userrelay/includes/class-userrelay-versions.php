<?php
/**
 * Versions: which of two changes of a user's field group is the newer, the same on every site
 * (docs/adr/0011-convergent-versions.md, docs/protocol.md "Versions").
 *
 * A version is a hybrid logical clock reading "MS.COUNTER@SITE": the milliseconds of the site's
 * clock (or of a version it saw that was ahead of it), a counter that orders readings within one
 * millisecond, and the id of the site that made the change, which breaks a tie. Versions compare
 * as (ms, counter, site), numbers as numbers and site ids byte by byte; relay/versions.py holds
 * the same rule. The site's clock (option userrelay_clock) never goes back and is moved past
 * every version the site applies, so a change made here after a delivery was applied is newer
 * than that delivery's change, however far the two sites' clocks are apart.
 *
 * Each user holds one version per field group: created (which incarnation of the person this
 * account is), profile, email, password, roles, "meta:KEY" per meta key and "meta:*" for every
 * meta key without a version of its own. A user never stamped has implied versions: created at
 * user_registered, the others at the last reported change, with an empty site.
 *
 * This class is the rule alone: pure (no WordPress, no database), so tests run it with php-cli.
 * Where a site keeps its clock, each user's versions and its tombstones is
 * UserRelay_Stored_Versions.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

// The shared facts this rule is made of; also loaded on its own by the relay's tests.
require_once __DIR__ . '/class-userrelay-facts.php';

/**
 * The version rule.
 */
final class UserRelay_Versions {

	/** Most digits of a version's ms and counter (PHP integers are 64 bits). */
	const PATTERN = '/^(\d{1,15})\.(\d{1,9})@([\x21-\x7E]{0,64})$/D';

	/**
	 * A version's parts, or null when it is not one.
	 *
	 * @param mixed $version A version string.
	 * @return array{0: int, 1: int, 2: string}|null
	 */
	public static function parse( $version ): ?array {
		if ( ! is_string( $version ) || 1 !== preg_match( self::PATTERN, $version, $m ) ) {
			return null;
		}
		return array( (int) $m[1], (int) $m[2], $m[3] );
	}

	/**
	 * A version from its parts.
	 *
	 * @param int    $ms      Milliseconds.
	 * @param int    $counter Counter.
	 * @param string $site    Site id.
	 */
	public static function format( int $ms, int $counter, string $site ): string {
		return $ms . '.' . $counter . '@' . $site;
	}

	/**
	 * -1, 0 or 1 as $a is older than, the same as or newer than $b (a malformed version is the
	 * oldest).
	 *
	 * @param string|null $a A version.
	 * @param string|null $b Another.
	 */
	public static function compare( $a, $b ): int {
		$x = self::parse( $a ) ?? array( 0, 0, '' );
		$y = self::parse( $b ) ?? array( 0, 0, '' );
		if ( $x[0] !== $y[0] ) {
			return $x[0] < $y[0] ? -1 : 1;
		}
		if ( $x[1] !== $y[1] ) {
			return $x[1] < $y[1] ? -1 : 1;
		}
		return $x[2] === $y[2] ? 0 : ( strcmp( $x[2], $y[2] ) < 0 ? -1 : 1 );
	}

	/**
	 * The newer of two versions.
	 *
	 * @param string|null $a A version.
	 * @param string|null $b Another.
	 */
	public static function newer( $a, $b ): string {
		return self::compare( $a, $b ) >= 0 ? (string) ( $a ?? UserRelay_Facts::MIN_VERSION ) : (string) $b;
	}

	/**
	 * The clock's next reading: later than $after and than the physical clock.
	 *
	 * @param string|null $after   The latest version seen (the clock, or a user's newest).
	 * @param int         $now_ms  The physical clock, milliseconds.
	 * @param string      $site    This site's id.
	 */
	public static function tick( $after, int $now_ms, string $site ): string {
		list( $ms, $counter ) = self::parse( $after ) ?? array( 0, 0, '' );
		return $now_ms > $ms ? self::format( $now_ms, 0, $site ) : self::format( $ms, $counter + 1, $site );
	}

	/**
	 * The version a user's group holds, from the stored map (null: never stamped, $implied
	 * then says what its groups hold).
	 *
	 * @param array|null $stored  Group => version, or null.
	 * @param string     $group   The group.
	 * @param array      $implied Versions of an unstamped user's groups (created, others).
	 */
	public static function held( ?array $stored, string $group, array $implied ): string {
		if ( null === $stored ) {
			return 'created' === $group ? $implied['created'] : $implied['changed'];
		}
		if ( isset( $stored[ $group ] ) && is_string( $stored[ $group ] ) ) {
			return $stored[ $group ];
		}
		if ( 0 === strpos( $group, 'meta:' ) && isset( $stored['meta:*'] ) && is_string( $stored['meta:*'] ) ) {
			return $stored['meta:*'];
		}
		return UserRelay_Facts::MIN_VERSION;
	}

	/**
	 * Which carried groups a delivery may write: those whose delivered version is newer than
	 * what the user holds here. A group the delivery has no version for is older than anything.
	 *
	 * @param string[]   $groups    The groups the delivery carries.
	 * @param array      $delivered The delivery's versions.
	 * @param array|null $stored    The user's stored versions (null: never stamped).
	 * @param array      $implied   Implied versions (see held()).
	 * @param bool       $source_wins From the source of a push or pull link: skipped only where
	 *                                this site holds a newer change made by the same site.
	 * @return array{apply: string[], skip: string[]}
	 */
	public static function decide( array $groups, array $delivered, ?array $stored, array $implied, bool $source_wins = false ): array {
		$apply = array();
		$skip  = array();
		foreach ( $groups as $group ) {
			$version = isset( $delivered[ $group ] ) && is_string( $delivered[ $group ] ) ? $delivered[ $group ] : UserRelay_Facts::MIN_VERSION;
			$held    = self::held( $stored, $group, $implied );
			$newer   = self::compare( $held, $version ) >= 0;
			if ( $newer && $source_wins ) {
				$newer = ( self::parse( $held ) ?? array( 0, 0, '' ) )[2] === ( self::parse( $version ) ?? array( 0, 0, '' ) )[2];
			}
			if ( $newer ) {
				$skip[] = $group;
			} else {
				$apply[] = $group;
			}
		}
		return array(
			'apply' => $apply,
			'skip'  => $skip,
		);
	}

	/**
	 * Whether a delete applies to an account whose incarnation here began at $created: unless
	 * it was created after the delete (a delete wins over concurrent edits, not over a later
	 * re-creation).
	 *
	 * @param string $created The account's created version here.
	 * @param string $delete  The delete's version.
	 */
	public static function delete_applies( string $created, string $delete ): bool {
		return self::compare( $created, $delete ) <= 0;
	}

	/**
	 * Whether a change of an account created at $created may create it again where that
	 * person was deleted at $gone: only a later incarnation may.
	 *
	 * @param string $created The delivery's created version.
	 * @param string $gone    The tombstone's version.
	 */
	public static function revives( string $created, string $gone ): bool {
		return self::compare( $created, $gone ) > 0;
	}

	/**
	 * The stored map after applying: every group of $apply at its delivered version (never
	 * backwards: decide() let through only newer ones), the rest as held.
	 *
	 * @param array|null $stored    Stored versions (null: never stamped: its implied ones kept).
	 * @param string[]   $apply     Groups applied.
	 * @param array      $delivered The delivery's versions.
	 * @param array      $implied   Implied versions.
	 * @param bool       $source_wins Whether a source overrode this site's own change (the
	 *                                source's version is then held, even if older).
	 */
	public static function record( ?array $stored, array $apply, array $delivered, array $implied, bool $source_wins = false ): array {
		$map = null === $stored ? self::materialize( $implied ) : $stored;
		foreach ( $apply as $group ) {
			$version       = $delivered[ $group ] ?? UserRelay_Facts::MIN_VERSION;
			$map[ $group ] = $source_wins ? $version : self::newer( self::held( $map, $group, $implied ), $version );
		}
		return $map;
	}

	/**
	 * A never-stamped user's implied versions, written down (so later changes of the user's
	 * last-change time do not move them).
	 *
	 * @param array $implied Implied versions.
	 */
	public static function materialize( array $implied ): array {
		$map = array();
		foreach ( UserRelay_Facts::VERSION_GROUPS as $group ) {
			$map[ $group ] = 'created' === $group ? $implied['created'] : $implied['changed'];
		}
		return $map;
	}

	/**
	 * The newest version in a map (a user's newest change).
	 *
	 * @param array $map Group => version.
	 */
	public static function newest( array $map ): string {
		$newest = UserRelay_Facts::MIN_VERSION;
		foreach ( $map as $version ) {
			if ( is_string( $version ) ) {
				$newest = self::newer( $newest, $version );
			}
		}
		return $newest;
	}

	/**
	 * A user's versions with one entry for each of these meta keys (their own, or meta:*).
	 *
	 * @param array    $map       Group => version.
	 * @param string[] $meta_keys Meta keys.
	 */
	public static function expanded( array $map, array $meta_keys ): array {
		foreach ( $meta_keys as $key ) {
			$map[ 'meta:' . $key ] = self::held( $map, 'meta:' . $key, array() );
		}
		ksort( $map );
		return $map;
	}

	/**
	 * The implied versions of a user never stamped: created at $registered, every other group
	 * at $modified (unix seconds), with no site (older than any stamped change of that ms).
	 *
	 * @param float $registered When the user registered.
	 * @param float $modified   The user's last reported change.
	 * @return array{created: string, changed: string}
	 */
	public static function implied( float $registered, float $modified ): array {
		return array(
			'created' => self::format( (int) max( 0, floor( $registered * 1000 ) ), 0, '' ),
			'changed' => self::format( (int) max( 0, floor( $modified * 1000 ) ), 0, '' ),
		);
	}
}
